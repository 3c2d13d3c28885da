"""The chat app's building blocks: ``view`` (plain data, no Streamlit), ``render`` (Streamlit drawing),
``engine`` (process-wide shared models and index). ``app.py`` at the repository root wires them."""
