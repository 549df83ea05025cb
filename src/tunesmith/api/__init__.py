"""The HTTP shell: FastAPI app factory, dependencies, one router per resource.

Routes parse the request, call one service function and return a protocol model."""
