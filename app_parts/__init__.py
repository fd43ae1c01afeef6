"""Parts of the Gradio page (app.py draws it): config, canvas <-> masks, palette rows <-> scenes, palette files, the
page's components (page), what its buttons do (palette_actions, generation, streaming), session state, GPU work (work),
page script (frontend).

UI code only; every piece of generation logic lives in semantic_draw."""
