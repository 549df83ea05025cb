// Charts as inline SVG: line charts for a job's loss and accuracy, bar charts for the token
// histograms of a training file. No library: a few hundred points need nothing more.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 260;
const PAD = { left: 56, right: 16, top: 16, bottom: 40 };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// About `count` round tick values covering [lo, hi].
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

// [lo, hi] widened to the tick marks around them, so the top value has a gridline and a label.
export function niceRange(lo, hi) {
  const marks = ticks(lo, hi);
  if (marks.length < 2) return [lo, hi];
  const round = (v) => Number(v.toPrecision(12)); // 0.2, not 0.19999999999999996
  const step = round(marks[1] - marks[0]);
  const top = marks[marks.length - 1] < hi ? round(marks[marks.length - 1] + step) : hi;
  return [Math.min(lo, round(Math.floor(lo / step) * step)), top];
}

function label(value) {
  const abs = Math.abs(value);
  if (abs >= 10000) return `${(value / 1000).toFixed(0)}k`;
  if (abs >= 100 || Number.isInteger(value)) return String(Math.round(value * 100) / 100);
  return value.toPrecision(3).replace(/\.?0+$/, "");
}

function frame(title, xLabel, yLabel, xs, ys) {
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": title,
    class: "chart-svg",
  });
  root.append(svg("title", {}, title));
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const [x0, x1] = xs;
  const [y0, y1] = niceRange(ys[0], ys[1]);
  const sx = (x) => PAD.left + (x1 > x0 ? ((x - x0) / (x1 - x0)) * plotW : plotW / 2);
  const sy = (y) => PAD.top + plotH - (y1 > y0 ? ((y - y0) / (y1 - y0)) * plotH : plotH / 2);
  const grid = svg("g", { class: "grid" });
  for (const t of ticks(y0, y1)) {
    grid.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: sy(t), y2: sy(t) }));
    grid.append(
      svg("text", { x: PAD.left - 6, y: sy(t) + 4, "text-anchor": "end" }, label(t)),
    );
  }
  for (const t of ticks(x0, x1, 6)) {
    grid.append(
      svg("text", { x: sx(t), y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle" }, label(t)),
    );
  }
  grid.append(
    svg("text", { x: PAD.left + plotW / 2, y: HEIGHT - 6, "text-anchor": "middle" }, xLabel),
  );
  grid.append(
    svg(
      "text",
      { x: 14, y: PAD.top + plotH / 2, transform: `rotate(-90 14 ${PAD.top + plotH / 2})`,
        "text-anchor": "middle" },
      yLabel,
    ),
  );
  grid.append(svg("rect", { x: PAD.left, y: PAD.top, width: plotW, height: plotH, class: "box" }));
  root.append(grid);
  return { root, sx, sy };
}

function extent(values, { zero = false } = {}) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (zero) lo = Math.min(0, lo);
  if (lo === hi) {
    lo -= lo === 0 ? 0 : Math.abs(lo) * 0.1;
    hi += hi === 0 ? 1 : Math.abs(hi) * 0.1;
  }
  return [lo, hi];
}

// series: [{key, name, points: [[x, y], ...]}]; series without points are left out.
export function lineChart({ title, xLabel, yLabel, series }) {
  const shown = series.filter((s) => s.points.length);
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.chart = title;
  if (!shown.length) {
    figure.append(Object.assign(document.createElement("p"), {
      className: "empty", textContent: `${title}: no points yet.`,
    }));
    return figure;
  }
  const xs = extent(shown.flatMap((s) => s.points.map((p) => p[0])));
  const ys = extent(shown.flatMap((s) => s.points.map((p) => p[1])));
  const { root, sx, sy } = frame(title, xLabel, yLabel, xs, ys);
  const legend = document.createElement("figcaption");
  shown.forEach((s, i) => {
    const d = s.points.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
    const group = svg("g", { class: `series s${i}`, "data-series": s.key, "data-points": s.points.length });
    group.append(svg("path", { d: d.join("") }));
    // Sparse series (validation) get a marker per point so a single point is visible.
    if (s.points.length <= 40) {
      for (const [x, y] of s.points) {
        group.append(svg("circle", { cx: sx(x), cy: sy(y), r: 3 }, svg("title", {}, `${s.name}: step ${x}, ${label(y)}`)));
      }
    }
    root.append(group);
    const last = s.points[s.points.length - 1];
    const item = document.createElement("span");
    item.className = `key s${i}`;
    item.textContent = `${s.name} ${label(last[1])}`;
    legend.append(item);
  });
  figure.append(root, legend);
  return figure;
}

// A histogram from {edges, counts}: bar i covers [edges[i], edges[i+1]).
export function histogram({ title, xLabel, data }) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.chart = title;
  if (!data || !data.counts || !data.counts.length) {
    figure.append(Object.assign(document.createElement("p"), {
      className: "empty", textContent: `${title}: no examples.`,
    }));
    return figure;
  }
  const { edges, counts } = data;
  const { root, sx, sy } = frame(title, xLabel, "examples", [edges[0], edges[edges.length - 1]],
    [0, Math.max(...counts)]);
  const bars = svg("g", { class: "bars", "data-bars": counts.length });
  counts.forEach((count, i) => {
    const x = sx(edges[i]);
    const w = Math.max(1, sx(edges[i + 1]) - x - 1);
    const y = sy(count);
    bars.append(svg("rect", { x, y, width: w, height: sy(0) - y },
      // bins hold whole numbers from edges[i] up to, not including, edges[i + 1]
      svg("title", {}, `${edges[i + 1] - edges[i] === 1 ? edges[i] : `${edges[i]}–${edges[i + 1] - 1}`}: ${count}`)));
  });
  root.append(bars);
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(root, caption);
  return figure;
}
