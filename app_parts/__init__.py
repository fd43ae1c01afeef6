"""Parts of the Gradio page (app.py): canvas <-> masks, palette rows <-> scenes, session state, GPU work, page script.

UI code only; every piece of generation logic lives in semantic_draw."""
