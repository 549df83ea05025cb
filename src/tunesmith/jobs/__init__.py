"""Fine-tuning jobs: the lifecycle (:mod:`.states`), the request (:mod:`.spec`), the service the
API calls (:mod:`.service`), the durable queue (:mod:`.queue`), file validation against the base
model (:mod:`.validate`), the worker (:mod:`.worker`) and the job process (:mod:`.runner`)."""
