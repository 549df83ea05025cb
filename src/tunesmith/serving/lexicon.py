"""The built-in content filter's rules: curated terms, benign contexts and phrase rules for the
four harm categories of Azure's content filter (hate, sexual, violence, self_harm), each rated
on Azure's scale ``safe < low < medium < high``. Data only; ``serving/scanner.py`` applies it.

All rules match whole words of the normalised text (``serving/normalise.py``: lower case,
apostrophes dropped, punctuation turned into single spaces), so they are written for plain
lower-case English. Three kinds:

- **terms**: single words or short fixed phrases, each list carrying its category and
  severity. A lone term is evidence of a topic, so most are ``low``; only terms that are
  explicit on their own (slurs, pornography, graphic mutilation) are ``medium``.
- **benign contexts**: common harmless uses of a term ("kill the process", "photo shoot",
  "breast cancer", "sex education", "chink in the armour"). A term found inside one is capped
  at the context's severity (``safe`` or ``low``).
- **phrases**: patterns that say more than any word alone: first-person threats, self-harm
  intent, instructions for weapons or suicide, dehumanising statements about a group, sexual
  content involving minors. They set ``medium`` or ``high`` and are never capped.

Every alternative of a term list, a context or a phrase's ``key`` begins with a literal word
(the scanner checks, and uses those words to skip rules that cannot match). Some rules also
carry an *aspect* (``threat``, ``intent``, ``instructions``, ``graphic``, ``minors``,
``harassment``), which ``POST /v1/moderations`` uses to fill OpenAI's
subcategories (``hate/threatening``, ``self-harm/intent``...). What these rules cannot see is
listed in ``docs/CONTENT_FILTER.md``. Slurs are stored ROT13-encoded, so that reading or
grepping this file does not print them; each is described in a comment.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final, Literal

Category = Literal["hate", "sexual", "violence", "self_harm"]
CATEGORIES: Final[tuple[Category, ...]] = ("hate", "sexual", "violence", "self_harm")
Severity = Literal["safe", "low", "medium", "high"]
SEVERITIES: Final[tuple[Severity, ...]] = ("safe", "low", "medium", "high")
"""In increasing order; ``SEVERITIES.index`` ranks them."""
Aspect = Literal["threat", "intent", "instructions", "graphic", "minors", "harassment"]
Label = tuple[Category, Severity, Aspect | None]

LEXICON_VERSION: Final = "1"
"""Bumped whenever a rule changes; it names the moderation model (``tunesmith-moderation-1``)."""


def _rot13(*words: str) -> tuple[str, ...]:
    return tuple(codecs.decode(word, "rot13") for word in words)


@dataclass(frozen=True, slots=True)
class Context:
    """A benign use of some terms: a term of ``categories`` inside a match is capped at ``cap``."""

    categories: tuple[Category, ...]
    cap: Severity
    pattern: str


@dataclass(frozen=True, slots=True)
class Phrase:
    """A pattern that says more than its words: every match sets each of ``labels``."""

    name: str
    labels: tuple[Label, ...]
    key: str
    """A sub-pattern every match contains, each alternative beginning with a word: the rule
    runs only on text with a word that begins like one of them (``scanner._heads``)."""
    pattern: str


# -- shared fragments ----------------------------------------------------------------------------

# Protected groups, plural or collective, as hate phrases name them.
_GROUP_NOUN = (
    r"(?:jews|jewish people|muslims|christians|catholics|hindus|sikhs|buddhists|atheists|blacks"
    r"|black people|whites|white people|asians|asian people|arabs|africans|mexicans|latinos"
    r"|latinas|hispanics|immigrants|migrants|refugees|foreigners|gays|gay people|lesbians"
    r"|homosexuals|bisexuals|trans people|transgender people|trans women|trans men|women|men"
    r"|gypsies|roma|chinese people|chinese|indians|disabled people|disabled)"
)
_GROUP = rf"(?:the )?{_GROUP_NOUN}"
# "I will", "I'll" (apostrophes are dropped: "ill"), "I'm going to"...
_I_WILL = (
    r"\b(?:(?:i|we)(?: will| shall| am going to| are going to| am gonna| are gonna| gonna"
    r"| want to| wanna| am about to| are about to| am coming to| are coming to)"
    r"|ill|im going to|im gonna|im about to|im coming to|were going to|were gonna)"
)
_VICTIM = (
    r"(?:you|u|ya|yall|all of you|every one of you|your (?:family|wife|husband|kids|kid"
    r"|children|son|daughter|mother|mom|mum|father|dad|boss)|him|her|them|my (?:wife|husband"
    r"|boss|neighbou?r|teacher|father|dad|mother|mom|mum|brother|sister|ex)|everyone|everybody)"
)
_KILL = r"(?:kill|murder|shoot|stab|strangle|behead|slaughter|rape|butcher|gut|hunt down)"
_HARM = r"(?:hurt|beat|punch|smash|break)"
_WEAPON_NOUN = (
    r"(?:bombs?|explosives|explosive devices?|ieds?|grenades?|molotov(?: cocktails?)?|napalm"
    r"|thermite|nerve agents?|nerve gas|sarin|vx|ricin|anthrax|mustard gas|chlorine gas"
    r"|bioweapons?|biological weapons?|chemical weapons?|ghost guns?"
    r"|untraceable (?:guns?|firearms?)|silencers?|zip guns?)"
)
_WEAPON = (
    r"(?:(?:a|an|some|my own|your own) )?(?:(?:pipe|nail|car|letter|fertili[sz]er|dirty|suicide"
    rf"|homemade|home made) )?{_WEAPON_NOUN}\b"
)
_HOW = r"\bhow (?:to|do i|do you|can i|could i|would i|should i|does one|would one|do we)"
_MYSELF_ACT = r"(?:kill|hang|shoot|poison|drown|hurt|harm|cut|starve|burn|off)"
_END_LIFE = r"(?:end|take) my (?:own )?life|commit suicide"
_ADVERB = r"(?: really| just| seriously| honestly| actually| truly| finally| definitely| still)?"
_MINOR_NOUN = (
    r"(?:child|children|kid|kids|minors|underage|preteen|preteens|toddler|toddlers|infant"
    r"|infants|schoolgirls?|schoolboys?)"
)
_MINORS = rf"(?:{_MINOR_NOUN}|(?:[1-9]|1[0-7]) (?:year|yr)s? olds?)"
# Words after "sex" that make a phrase about abuse, health or education, not sexual content.
_NOT_CONTENT = (
    r"(?:education|ed|abuse|abusers?|offen\w*|trafficking|crimes?|health|workers?|exploitation"
    r"|development|assault|violence|harassment|predators?|grooming|safety|behaviou?r"
    r"|orientation)\b"
)
_INSULT = (
    r"(?:idiot|moron|imbecile|loser|dumbass|pathetic|worthless|useless|ugly|stupid|dumb"
    r"|disgrace)"
)
# Four gendered slurs (ROT13: the b-, c-, w- and s-words), and two plain insults.
_VILE_INSULT = "(?:" + "|".join(_rot13("ovgpu", "phag", "juber", "fyhg")) + "|piece of shit|scum)"
# "you", "you are", "you're a complete"... before an insult.
_YOU_ARE = (
    r"\b(?:you|u|ur|youre)(?: are| r)? (?:(?:such|a|an|so|the|stupid|complete|total|absolute"
    r"|fucking|fat|ugly) )*"
)
# Benign phrases that contain a slur's letters: "...s in the armour", "... hound", "... growth".
_SLUR_LOOKALIKES = "|".join(
    (
        _rot13("puvaxf?")[0] + r" in (?:the|his|her|their|my|your|its) armou?r",
        _rot13("pbba")[0] + r" ?hounds?|maine " + _rot13("pbbaf?")[0],
        _rot13("ergneq")[0] + r"(?:s|ed|ing)? (?:the|its|their|growth|combustion|development"
        r"|progress|the spread)",
    )
)
_DEHUMANISING = (
    r"(?:animals|vermin|subhuman|sub humans?|parasites|cockroaches|roaches|rats|insects|apes"
    r"|monkeys|savages|a disease|a virus|a cancer|a plague|filth|scum|not human|less than human)"
)

# -- terms: each label's words, as one alternation; every term begins with a literal stem --------

TERMS: Final[dict[Label, str]] = {
    ("violence", "low", None): (
        r"kill(?:s|ed|ing|er|ers)?|murder(?:s|ed|ing|er|ers|ous)?|shoot(?:s|ing|ings|er|ers)?"
        r"|shot (?:him|her|them|dead)|stab(?:s|bed|bing|bings)?|strangl(?:e|es|ed|ing|er)"
        r"|assault(?:s|ed|ing)?|attack(?:s|ed|ing|er|ers)?|gun(?:s|man|men|fire|shot|shots|point)?"
        r"|firearms?|rifles?|weapons?|bomb(?:s|ed|ing|ings|er|ers)?|explosives?|grenades?"
        r"|massacre(?:s|d)?|slaughter(?:s|ed|ing)?|bloodbath|tortur(?:e|es|ed|ing)"
        r"|terroris(?:m|ts?)|lynch(?:ed|ing)?|execution style|violen(?:ce|t)"
    ),
    ("violence", "medium", "graphic"): (
        r"behead(?:s|ed|ing)?|decapitat(?:e|es|ed|ing|ion)|dismember(?:s|ed|ing|ment)?"
        r"|disembowel(?:s|ed|led|ing|ling)?|mutilat(?:e|es|ed|ing|ion)|entrails"
        r"|(?:blood|brains|guts) (?:spurt|gush|spray|splatter|spatter|spill)(?:s|ed|ing)?"
        r"|(?:skull|head) (?:was )?(?:crushed|caved in|split open|smashed in)"
        r"|goug(?:e|ed|ing) (?:out )?(?:his|her|their|your|my) eyes?"
        r"|(?:flayed|skinned|burned|burnt) alive"
    ),
    ("violence", "medium", None): r"rap(?:e|es|ed|ing|ist|ists)",
    ("sexual", "low", None): (
        r"sex|sexy|sexual(?:ly|ity)?|naked|nud(?:e|es|ity)|erotic(?:a|ism)?|lingerie|boobs?|tits"
        r"|breasts?|seduc(?:e|es|ed|ing|tion|tive)|arous(?:ed|al)|kinky"
        r"|strip(?:per|pers|tease| clubs?)|intercourse|make love|making love|one night stand"
        r"|sexting|genitals?|penis|vagina|fetish(?:es)?|bdsm"
    ),
    ("sexual", "medium", None): (
        r"porn(?:o|ography|ographic|hub)?|horny|orgasm(?:s|ic)?|masturbat(?:e|es|ed|ing|ion)"
        r"|blow ?jobs?|hand ?jobs?|dildos?|cum(?:shot|ming)?|cocks?|puss(?:y|ies)|threesomes?"
        r"|nsfw|xxx|rap(?:e|es|ed|ing|ist|ists)|send (?:me )?(?:your )?nudes"
        r"|(?:have|having|had) sex with"
    ),
    ("sexual", "high", "minors"): (
        r"child porn(?:o|ography)?|kiddie porn|csam|jailbait|lolicon|shotacon"
    ),
    ("hate", "medium", None): "|".join(
        _rot13(
            "avttref?",  # the n-word
            "avttnf?",  # the n-word, other spelling
            "snttbgf?",  # anti-gay slur
            "sntf?",  # anti-gay slur, short form
            "xvxrf?",  # antisemitic slur
            "puvaxf?",  # anti-Chinese slur
            "tbbxf?",  # anti-Asian slur
            "fcvpf?",  # anti-Latino slur
            "jrgonpxf?",  # anti-Mexican slur
            "genaavrf?",  # anti-trans slur, plural
            "genaal",  # anti-trans slur
            "enturnqf?",  # anti-Arab / anti-Muslim slur
            "pbbaf?",  # anti-Black slur
            "ergneq(?:f|rq)?",  # ableist slur
        )
    ),
    ("self_harm", "low", None): (
        r"suicid(?:e|es|al)|self ?harm(?:s|ed|ing)?|self ?injur(?:y|ies|ing)"
        r"|overdos(?:e|es|ed|ing)|anorexi(?:a|c)|bulimi(?:a|c)"
        r"|killed (?:himself|herself|themselves)|took (?:his|her|their) own life"
    ),
    ("self_harm", "medium", None): (
        r"kill(?:ing)? myself|(?:cut|cutting|burn|burned|burning|starve|starving|harm|harming"
        r"|hurting) myself|suicidal (?:thoughts|ideation|feelings)|thinspo(?:ration)?|pro ana"
    ),
}

# -- benign contexts ----------------------------------------------------------------------------

CONTEXTS: Final[tuple[Context, ...]] = (
    Context(
        ("violence",),
        "safe",
        r"kill(?:s|ed|ing)? (?:(?:the|a|an|this|that|these|those|all|my|your|its|any|every"
        r"|some) )?(?:\w+ )?(?:process(?:es)?|tasks?|jobs?|programs?|apps?|applications?"
        r"|servers?|sessions?|commands?|threads?|containers?|pods?|switch|signals?|services?"
        r"|daemons?|workers?|quer(?:y|ies)|connections?|tabs?|windows?|lights?|engines?|time"
        r"|the mood|weeds?|germs?|bacteria|pests?)\b|kill(?:s|ed|ing)? it\b"
        r"|kill(?: \d+)+\b(?! [a-z])|killer (?:apps?|features?|deals?|whales?|bees?|instinct"
        r"|queen|sudoku|heels|smile|workout)|dressed to kill|kill two birds"
        r"|kill for (?:a|an|some)\b|(?:killing|kill) me\b(?! (?:now|please))",
    ),
    Context(
        ("violence", "self_harm"),
        "safe",
        r"kill(?:ing|s)? (?:me|myself)? ?(?:laughing|working|trying|studying)",
    ),
    Context(
        ("violence",),
        "safe",
        r"shoot(?:s|ing)? (?:(?:a|an|the|some|me|us|you|him|her|them|my|our|your) )?(?:\w+ )?"
        r"(?:photos?|pictures?|pics?|videos?|films?|movies?|scenes?|footage|portraits?|weddings?"
        r"|e ?mails?|messages?|texts?|notes?|hoops|baskets?|the breeze|pool|for the (?:moon"
        r"|stars))|(?:photo|video|film|fashion|wedding|magazine|music video) shoots?"
        r"|shooting (?:guard|stars?|pains?)",
    ),
    Context(
        ("violence",),
        "safe",
        r"(?:heart|panic|anxiety|asthma|allergy|allergic) attacks?|attack (?:surfaces?|vectors?"
        r"|trees?)|(?:ddos|dos|brute force|replay|phishing|cyber|side channel|timing|dictionary"
        r"|xss|injection|csrf|man in the middle|mitm) attacks?",
    ),
    Context(
        ("violence",),
        "safe",
        r"(?:bath|photo|smoke|seed|glitter) bombs?|bombed (?:the|my|an|that) (?:exam|test"
        r"|interview|audition|presentation)|bomb calorimeter",
    ),
    Context(
        ("violence",),
        "safe",
        r"(?:glue|nail|heat|staple|spray|water|nerf|paint|caulk(?:ing)?|grease|radar|speed"
        r"|massage|tattoo|squirt|starting|top) guns?|gun (?:metal|shy)|jump(?:ed|ing)? the gun"
        r"|stick to (?:my|your|our|their) guns|smoking gun|son of a gun|big guns",
    ),
    Context(
        ("violence",),
        "safe",
        r"(?:take|took|taking|have|had) a stab at|stab in the dark|murder (?:myster(?:y|ies)"
        r"|of crows)|torture (?:tests?|testing)|strangler (?:fig|pattern)|secret weapons?",
    ),
    Context(("violence",), "low", r"genital mutilation"),
    Context(
        ("violence", "sexual"),
        "low",
        r"rape (?:crisis|kits?|survivors?|prevention|counsel+ing|hotline)",
    ),
    Context(
        ("sexual",),
        "safe",
        r"breast (?:cancer|feeding|fed|milk|pump|exam|screening|tissue|surgery|reduction"
        r"|implants?|stroke)|breastfeed\w*|chicken breasts?|(?:blue|great|coal|long tailed) tits",
    ),
    Context(
        ("sexual",),
        "low",
        r"sex (?:education|ed|differences?|chromosomes?|determination|hormones?|workers?)"
        r"|sexual (?:health|education|orientation|harassment|assault|abuse|reproduction)"
        r"|the sex of|same sex",
    ),
    Context(
        ("sexual",),
        "safe",
        r"(?:summa|magna) cum laude|cum laude|pussy ?(?:cats?|willows?)|cock (?:the|a|his|her)"
        r" (?:gun|hammer|pistol|rifle)|cocks? crow|(?:weather|stop) ?cocks?",
    ),
    Context(("hate",), "safe", _SLUR_LOOKALIKES),
    Context(
        ("self_harm",),
        "low",
        r"suicide (?:prevention|hotlines?|helplines?|lifelines?|awareness|rates?|statistics|risk)",
    ),
    Context(("self_harm",), "safe", r"suicide (?:squad|doors?|squeeze)"),
    Context(
        ("self_harm",),
        "safe",
        r"(?:cut|cutting|burn|burned|burnt|burning) myself (?:\w+ )?(?:shaving|cooking"
        r"|by accident|accidentally|slicing|chopping|opening|on (?:a|the|some|broken|sharp|hot)"
        r"|with a kitchen knife)|burn(?:ing|ed|t)? myself out",
    ),
)

# -- phrases ------------------------------------------------------------------------------------

_THREAT: Final[tuple[Label, ...]] = (("violence", "high", "threat"),)
_GROUP_THREAT: Final[tuple[Label, ...]] = (
    ("hate", "high", "threat"),
    ("violence", "high", "threat"),
)
_SELF_INTENT: Final[tuple[Label, ...]] = (("self_harm", "high", "intent"),)
_SELF_HOWTO: Final[tuple[Label, ...]] = (("self_harm", "high", "instructions"),)

PHRASES: Final[tuple[Phrase, ...]] = (
    # violence: first-person threats against a person; weapon and killing instructions
    Phrase("threat", _THREAT, _KILL, rf"{_I_WILL} (?:find and )?{_KILL} {_VICTIM}\b"),
    Phrase(
        "threat-harm",
        (("violence", "medium", "threat"),),
        rf"{_HARM}|where you live|die",
        rf"{_I_WILL} {_HARM} {_VICTIM}\b|\bi know where you live\b"
        r"|\b(?:you are|youre|you will be|ur) (?:going to|gonna) die\b",
    ),
    Phrase(
        "weapon-instructions",
        (("violence", "high", "instructions"),),
        _WEAPON_NOUN,
        rf"{_HOW} (?:make|build|construct|assemble|create|cook|manufacture|synthesi[sz]e|produce"
        rf"|rig|detonate|plant) {_WEAPON}|\b(?:instructions|recipe|steps|guide|tutorial)"
        rf" (?:for|to|on) (?:making|building|make|build) {_WEAPON}",
    ),
    Phrase(
        "killing-instructions",
        (("violence", "high", "instructions"),),
        r"(?:kill|murder|poison|strangle|stab|shoot)",
        rf"{_HOW} (?:kill|murder|poison|strangle|stab|shoot) (?:someone|somebody|a person|people"
        rf"|a human|a child|a kid|{_VICTIM})\b",
    ),
    # hate: threats against, dehumanising and contemptuous statements about a group; insults
    Phrase(
        "group-threat",
        _GROUP_THREAT,
        _GROUP_NOUN,
        rf"\b(?:kill|murder|exterminate|gas|eradicate|eliminate|wipe out|slaughter|massacre|lynch"
        rf"|hang|shoot|burn|nuke) (?:(?:all|every|each|the|those|these|of) )*{_GROUP}\b"
        rf"|\bdeath to (?:all )?{_GROUP}\b|\b{_GROUP} (?:should|must|need to|deserve to"
        rf"|ought to) (?:all )?(?:die|be killed|be exterminated|be gassed|be eradicated"
        rf"|be wiped out|be shot|be hanged|be lynched|burn|be eliminated)\b",
    ),
    Phrase(
        "dehumanising",
        (("hate", "high", None),),
        _GROUP_NOUN,
        rf"\b{_GROUP} (?:are|r|is|were) (?:(?:all|just|nothing but|basically|literally|like) )*"
        rf"{_DEHUMANISING}\b",
    ),
    Phrase(
        "group-contempt",
        (("hate", "medium", None),),
        rf"{_GROUP_NOUN}|go back",
        rf"\bi (?:hate|despise|detest|cant stand) (?:(?:all|the|those|these) )*{_GROUP}\b"
        rf"|\b{_GROUP} (?:are|r|is) (?:(?:all|just|naturally|genetically|inherently|basically) )*"
        r"(?:inferior|stupid|dumb|criminals|thieves|terrorists|evil|lazy|dirty|rapists|pedophiles"
        r"|paedophiles|worthless|trash|garbage)\b|\bgo back (?:to|where) (?:your|you) (?:own )?"
        r"(?:country|came from)\b",
    ),
    Phrase(
        "insult",
        (("hate", "low", "harassment"),),
        rf"{_INSULT}|hates you|likes you",
        rf"{_YOU_ARE}{_INSULT}s?\b|\b(?:everyone|everybody|nobody|no one) (?:hates|likes) you\b",
    ),
    Phrase(
        "vile-insult",
        (("hate", "medium", "harassment"),),
        _VILE_INSULT,
        rf"{_YOU_ARE}{_VILE_INSULT}\b",
    ),
    # sexual: minors, and requests for explicit content
    Phrase(
        "sexual-minors",
        (("sexual", "high", "minors"),),
        rf"{_MINOR_NOUN}|year|yr",
        rf"\b(?:sex|sexual|porn|porno|pornography|nude|nudes|naked|erotic)"
        rf"(?: (?!{_NOT_CONTENT})\w+){{0,3}} (?:with|of|involving|featuring) (?:(?:a|an|the|some"
        rf"|my|your|two|young|little) )*{_MINORS}\b|\b{_MINORS} (?:sex|porn|porno|pornography"
        rf"|nudes|nude|erotica|sexual (?:content|images|photos|videos|acts?))\b"
        rf"(?! {_NOT_CONTENT})|\b(?:sexy|naked|nude) {_MINORS}\b",
    ),
    Phrase(
        "explicit-request",
        (("sexual", "high", None),),
        r"explicit|graphic|hardcore|rated|nsfw",
        r"\b(?:write|describe|narrate|generate|create|show|tell)(?: me)? (?:\w+ ){0,3}(?:explicit"
        r"|graphic|hardcore|x rated|nsfw) (?:\w+ ){0,2}(?:sex|sexual|porn|erotica|sex scenes?)\b"
        r"|\bhardcore (?:porn|sex)\b",
    ),
    # self-harm: how the speaker feels, intent, instructions, encouragement
    Phrase(
        "suicidal-feeling",
        (("self_harm", "medium", None),),
        r"suicidal",
        r"\b(?:i|im|i am|i feel|feeling)(?: so| really| very| kind of| kinda)? suicidal\b",
    ),
    Phrase(
        "self-harm-intent",
        _SELF_INTENT,
        r"myself|my own life|my life|suicide",
        rf"\b(?:i|im|ive|we){_ADVERB} (?:want|wanna|wanted|need|going|gonna|plan|planning"
        rf"|intend|about|ready|decided|trying|tried|have|will|should|am going|am planning"
        rf"|am ready|have decided)(?: to)? (?:{_MYSELF_ACT} myself|{_END_LIFE})\b"
        rf"|\b(?:ill|i will|i shall){_ADVERB} (?:{_MYSELF_ACT} myself|{_END_LIFE})\b",
    ),
    Phrase(
        "wish-to-die",
        _SELF_INTENT,
        r"die|dead|live|alive|exist|would|better off|end it all",
        r"\bi(?: just| really| honestly)? (?:want|wanna|wish i could|wish to|am going|am ready)"
        r"(?: to)? die\b(?! (?:of|laughing|from|for|on|in|when|a little))"
        r"|\bi wish i (?:was|were) dead\b|\bi (?:dont|do not) want to (?:live|be alive|exist)"
        r" (?:anymore|any more)\b|\b(?:nobody|no one) would (?:miss me|care) if i (?:died|was gone"
        r"|were gone|killed myself)\b|\b(?:im|i am|everyone is|they are|theyd be) better off"
        r" (?:dead|without me)\b|\bend it all\b",
    ),
    Phrase(
        "self-harm-instructions",
        _SELF_HOWTO,
        r"myself|yourself|oneself|themselves|suicide|die|life|pills|tablets|mg|milligrams",
        rf"{_HOW} (?:{_MYSELF_ACT} (?:myself|yourself|oneself|themselves)|commit suicide"
        r"|attempt suicide)\b|\b(?:best|easiest|quickest|fastest|painless|least painful|surest"
        r"|most effective|cleanest) (?:way|ways|method|methods) (?:to|of) (?:die|commit suicide"
        r"|kill (?:myself|yourself|oneself)|end (?:my|your|ones) life|suicide)\b"
        r"|\bhow many (?:\w+ ){0,3}(?:pills|tablets|mg|milligrams) (?:\w+ ){0,4}(?:to die"
        r"|to overdose|is lethal|would kill|to kill (?:me|myself|you))\b",
    ),
    Phrase(
        "self-harm-encouragement",
        _SELF_HOWTO,
        r"yourself|kys",
        r"\b(?<!dont )(?<!do not )(?<!never )(?<!not )(?:kill|hang|drown) yourself\b"
        r"(?! (?:over|trying|laughing|working|for))|\bkys\b",
    ),
)
