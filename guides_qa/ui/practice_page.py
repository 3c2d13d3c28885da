"""The Practice page as a Streamlit page script: app.py's navigation runs it (guides_qa.ui.practice draws it)."""

from core.settings import load_settings
from guides_qa.ui import practice
from guides_qa.ui.engine import shared_engine

practice.page(load_settings(), shared_engine())
