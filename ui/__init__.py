"""The studio's Streamlit parts: pages stay thin (``pages/``), the logic lives in these modules.

Importing ``ui`` does nothing by itself: the router (``streamlit_app.py``) does the start-up work.
"""
