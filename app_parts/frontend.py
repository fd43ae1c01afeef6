"""Page styling and the small browser script that keeps the editor's layers named and coloured like the brushes.

Gradio's ImageEditor names layers that arrive in a value "Layer 1" and has no server-side way to rename one or to
pick the brush colour per layer. The script below does both on the page's own editor object (`window.editor`, which
the editor publishes): it keeps the layer names equal to the brush names and sets the brush colour to the active
layer's palette colour. Without it everything still works; only the names and colours in the editor are generic.

It also guards the editor where Gradio's own handling loses the painting:
  - a file given to the editor as a photo is decoded in the browser first: one that is not an image is refused with a
    message (the editor would wipe every layer), and one larger than the server's canvas limit is scaled down before
    the editor holds it (a 6000x4000 photo at full size costs the browser gigabytes);
  - a value of another canvas size is laid out at the new size (the editor places the layers of a new value by the
    bounds of what it held before, which shifts and cuts the masks of a smaller canvas);
  - "+ Add brush" adds the layer in the browser (ADD_LAYER), so the editor's undo history survives it;
  - a brush row's colour swatch picks that brush's layer.
"""
from __future__ import annotations

import json

CSS = """
#sd-editor { min-height: 480px; }
#sd-editor .layer-wrap li > div { display: none; }  /* no moving / deleting layers: layer n is brush n */
#sd-editor .layer-wrap ul { max-height: 260px; overflow-y: auto; }  /* 12 brushes do not cover the canvas */
#sd-editor .layer-wrap li button[aria-label^="layer-"]::before {
  content: ""; display: inline-block; width: 12px; height: 12px; border-radius: 50%; margin-right: 6px;
  vertical-align: -1px; background: var(--sd-layer, #999); border: 1px solid rgba(0,0,0,.3); }
.sd-swatch-box { flex: 0 0 38px !important; min-width: 38px !important; display: flex; align-items: center;
                 overflow: visible !important; padding-left: 8px !important; }
.sd-swatch { width: 24px; height: 24px; border-radius: 50%; border: 2px solid rgba(0,0,0,.25); cursor: pointer;
             margin: auto; box-shadow: inset 0 0 0 2px rgba(255,255,255,.6); }
.sd-swatch:hover { transform: scale(1.15); }
.sd-brush { border-left: 6px solid var(--sd-color, #999) !important; padding-left: 4px !important;
            margin-bottom: 4px !important; }
.sd-brush .sd-line { flex-wrap: nowrap !important; }
.sd-brush .sd-small { max-width: 34px; min-width: 34px !important; padding: 2px !important; }
.sd-brush .label-wrap { padding: 2px 8px !important; font-size: var(--text-sm); }
.sd-brush .sd-name textarea { font-weight: 600; }
#sd-output img { width: 100%; height: 100%; object-fit: contain; }
#sd-status { min-height: 1.5em; font-variant-numeric: tabular-nums; }
#sd-title h1 { margin-bottom: 0; }
#sd-client-note { display: none !important; }
#sd-examples .caption-label { white-space: normal; }
"""


def page_css(colors: list[tuple[int, int, int]]) -> str:
    """The page's CSS, with each brush row's border (and its layer in the editor's menu) in its palette colour."""
    rows = "\n".join(f"#sd-brush-{i + 1} {{ --sd-color: rgb({r}, {g}, {b}); }}\n"
                     f'#sd-editor button[aria-label="layer-{i + 1}"] {{ --sd-layer: rgb({r}, {g}, {b}); }}'
                     for i, (r, g, b) in enumerate(colors))
    return CSS + rows


def hex_colors(colors: list[tuple[int, int, int]]) -> list[str]:
    return ["#%02x%02x%02x" % tuple(c) for c in colors]


def page_script(names: list[str], colors: list[tuple[int, int, int]], max_side: int, max_brushes: int) -> str:
    """Runs once when the page loads (launch(js=...))."""
    return """
() => {
  const SD = window.__sd = window.__sd || {};
  SD.names = %s;
  SD.colors = %s;
  SD.maxSide = %d;
  SD.maxBrushes = %d;
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
  // A message for the page's toasts: the hidden box's change event shows it (app_parts.palette_actions.note).
  SD.say = (message) => {
    const box = document.querySelector('#sd-client-note textarea');
    if (!box) { alert(message); return; }
    SD.said = (SD.said || 0) + 1;
    box.value = message + '\\u200b'.repeat(SD.said %% 7);   // a new value each time, shown the same
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  // The editor lays out a new value's layers by the bounds of what it held before (stale when the canvas shrank):
  // lay them out at the canvas size instead.
  SD.patchLayout = (ed) => {
    const lm = ed.layer_manager;
    if (!lm || lm.__sdPatched || !lm.add_layer_from_url || !lm.image_container) return;
    const original = lm.add_layer_from_url.bind(lm);
    lm.add_layer_from_url = (url) => {
      const box = lm.image_container, bounds = box.getLocalBounds;
      box.getLocalBounds = function (...args) {
        const b = bounds.apply(this, args);
        if (ed.width && ed.height) { b.width = ed.width; b.height = ed.height; }
        return b;
      };
      try { return original(url); } finally { box.getLocalBounds = bounds; }
    };
    lm.__sdPatched = true;
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
    if (ed) SD.patchLayout(ed);
  };
  install();
  if (!SD.timer) SD.timer = setInterval(install, 500);
  if (SD.guarded) return;
  SD.guarded = true;
  // A photo for the editor is decoded here first: not an image -> refused with a message, the painting untouched;
  // larger than the canvas limit -> scaled down (PNG) before the editor gets it.
  document.addEventListener('change', async (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || input.type !== 'file' || !input.closest('#sd-editor')) return;
    if (input.__sdChecked) { input.__sdChecked = false; return; }
    const file = input.files && input.files[0];
    if (!file) return;
    event.stopImmediatePropagation();
    let bitmap = null;
    try { bitmap = await createImageBitmap(file); } catch (e) { bitmap = null; }
    if (!bitmap) {
      input.value = '';
      SD.say(`“${file.name}” is not an image this browser can open (PNG, JPEG, WebP...). The painting is unchanged.`);
      return;
    }
    let chosen = file;
    const side = Math.max(bitmap.width, bitmap.height);
    if (side > SD.maxSide) {
      const s = SD.maxSide / side;
      const w = Math.max(1, Math.round(bitmap.width * s)), h = Math.max(1, Math.round(bitmap.height * s));
      const c = document.createElement('canvas');
      c.width = w; c.height = h;
      c.getContext('2d').drawImage(bitmap, 0, 0, w, h);
      const blob = await new Promise(resolve => c.toBlob(resolve, 'image/png'));
      chosen = new File([blob], file.name.replace(/\\.[^.]*$/, '') + '.png', {type: 'image/png'});
      SD.say(`The photo is ${bitmap.width}x${bitmap.height}; it was scaled to ${w}x${h} to fit this server's ` +
             `canvas limit of ${SD.maxSide} px.`);
    }
    if (bitmap.close) bitmap.close();
    const files = new DataTransfer();
    files.items.add(chosen);
    input.files = files.files;
    input.__sdChecked = true;
    input.dispatchEvent(new Event('change', {bubbles: true}));
  }, true);
  // A brush row's swatch picks its layer in the editor.
  document.addEventListener('click', (event) => {
    const dot = event.target.closest && event.target.closest('.sd-swatch[data-brush]');
    const ed = window.editor;
    if (!dot || !ed || !ed.layer_manager) return;
    const layer = ed.layer_manager.layers[Number(dot.dataset.brush)];
    if (layer) ed.set_layer(layer.id);
  });
}
""" % (json.dumps(list(names)), json.dumps(hex_colors(colors)), int(max_side), int(max_brushes))


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

# "+ Add brush", in the browser: a new blank layer in the editor, made the active one, without re-sending the editor's
# value (which would start its undo history over). It answers how many layers the editor holds then (0: not added,
# e.g. the editor is not ready or holds the most brushes); the server sends the whole value when that does not match.
ADD_LAYER = """
() => {
  const ed = window.editor, SD = window.__sd || {};
  try {
    if (!ed || !ed.layer_manager || ed.layer_manager.layers.length >= (SD.maxBrushes || 0)) return 0;
    const lm = ed.layer_manager;
    lm.create_layer({width: ed.width, height: ed.height, layer_name: 'Brush ' + (lm.layers.length + 1),
                     user_created: true, make_active: true});
    if (ed.notify) ed.notify('change');
    return lm.layers.length;
  } catch (e) { return 0; }
}
"""

# After Save palette: download the file at once (one click), under the palette's name.
DOWNLOAD = """
(file) => {
  if (!file || !file.url) return [];
  const a = document.createElement('a');
  a.href = file.url;
  a.download = file.orig_name || 'palette.zip';
  document.body.appendChild(a);
  a.click();
  a.remove();
  return [];
}
"""


def swatch(color: tuple[int, int, int], index: int) -> str:
    r, g, b = color
    return (f'<div class="sd-swatch" data-brush="{index}" title="Brush {index + 1}: click to paint with it" '
            f'style="background: rgb({r}, {g}, {b})"></div>')
