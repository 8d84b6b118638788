"""`mnist-ops serve`: a draw-a-digit page and a JSON /predict endpoint (FastAPI on uvicorn)."""
