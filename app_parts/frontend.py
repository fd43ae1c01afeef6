"""Page styling and the small browser script that keeps the editor's layers named and coloured like the brushes.

Gradio's ImageEditor names layers that arrive in a value "Layer 1" and has no server-side way to rename one or to
pick the brush colour per layer. The script below does both on the page's own editor object (`window.editor`, which
the editor publishes): it keeps the layer names equal to the brush names and sets the brush colour to the active
layer's palette colour. Without it everything still works; only the names and colours in the editor are generic.
"""
from __future__ import annotations

import json

CSS = """
#sd-editor { min-height: 480px; }
#sd-editor .layer-wrap li > div { display: none; }  /* no moving / deleting layers: layer n is brush n */
.sd-swatch-box { flex: 0 0 44px !important; min-width: 44px !important; display: flex; align-items: center; }
.sd-swatch { width: 28px; height: 28px; border-radius: 50%; border: 2px solid rgba(0,0,0,.25);
             margin: auto; box-shadow: inset 0 0 0 2px rgba(255,255,255,.6); }
.sd-brush { border-left: 6px solid var(--sd-color, #999) !important; padding-left: 6px !important; }
.sd-brush .sd-remove { max-width: 44px; min-width: 44px !important; }
#sd-output img { width: 100%; height: 100%; object-fit: contain; }
#sd-status { min-height: 1.5em; font-variant-numeric: tabular-nums; }
#sd-title h1 { margin-bottom: 0; }
"""


def page_css(colors: list[tuple[int, int, int]]) -> str:
    """The page's CSS, with each brush row's border in its palette colour."""
    rows = "\n".join(f"#sd-brush-{i + 1} {{ --sd-color: rgb({r}, {g}, {b}); }}" for i, (r, g, b) in enumerate(colors))
    return CSS + rows


def hex_colors(colors: list[tuple[int, int, int]]) -> list[str]:
    return ["#%02x%02x%02x" % tuple(c) for c in colors]


def page_script(names: list[str], colors: list[tuple[int, int, int]]) -> str:
    """Runs once when the page loads (launch(js=...))."""
    return """
() => {
  const SD = window.__sd = window.__sd || {};
  SD.names = %s;
  SD.colors = %s;
  SD.apply = () => {
    const ed = window.editor;
    if (!ed || !ed.layer_manager) return false;
    const lm = ed.layer_manager;
    let changed = false;
    lm.layers.forEach((layer, i) => {
      const want = SD.names[i];
      if (want && layer.name !== want) { layer.name = want; changed = true; }
    });
    if (changed && lm.layer_store) lm.layer_store.update(s => ({...s, layers: lm.layers}));
    return true;
  };
  SD.recolor = (state) => {
    const ed = window.editor;
    if (!ed || !ed.tools || !state || !state.layers) return;
    const i = state.layers.findIndex(l => l.id === state.active_layer);
    const brush = ed.tools.get('brush');
    if (i >= 0 && brush && brush.set_brush_color && SD.colors[i]) brush.set_brush_color(SD.colors[i]);
  };
  // The editor may replace its layer store while it initialises (and a re-render makes a new editor), so keep
  // checking and subscribe to whichever store is current.
  const install = () => {
    const ed = window.editor;
    if (ed && ed.layers && ed.layers.subscribe && SD.store !== ed.layers) {
      if (SD.unsubscribe) SD.unsubscribe();
      SD.store = ed.layers;
      SD.unsubscribe = ed.layers.subscribe(state => {
        SD.apply();
        // after the editor's own tool switch, which re-applies the colour picker's choice
        setTimeout(() => SD.recolor(state), 60);
      });
      SD.installed = true;
    }
  };
  install();
  if (!SD.timer) SD.timer = setInterval(install, 500);
}
""" % (json.dumps(list(names)), json.dumps(hex_colors(colors)))


# Runs in the browser after the brush names or the editor's layers changed; its inputs are every row's name box.
SET_NAMES = """
(...names) => {
  const SD = window.__sd = window.__sd || {};
  SD.names = names.map((n, i) => ((n || '').trim() || ('Brush ' + (i + 1))));
  const tryApply = (left) => { if (!(SD.apply && SD.apply()) && left > 0) setTimeout(() => tryApply(left - 1), 150); };
  tryApply(20);
  return [];
}
"""


def swatch(color: tuple[int, int, int], index: int) -> str:
    r, g, b = color
    return (f'<div class="sd-swatch" title="Brush {index + 1} colour" '
            f'style="background: rgb({r}, {g}, {b})"></div>')
