"""The HTTP side of `kalpana watch`: GitHub webhooks (FastAPI, served by uvicorn)."""
