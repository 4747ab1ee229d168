// The keyboard: a label's hotkey toggles it (Shift: unknown; Alt: the second bank of keys, for labels beyond the
// first 35), Enter saves and opens the next photo, arrows move, u or Ctrl+Z undoes. Keys typed into a form field are
// left alone.
import { state } from "./state.js";
import { openPhoto, saveAndNext, toggle, undo } from "./photo.js";

export function installKeys() {
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
    if (e.metaKey) return;
    if (e.ctrlKey) { if (e.key === "z") { e.preventDefault(); undo(); } return; }
    if (e.altKey) {
      const name = state.byCode.get(`Alt+${e.code}`);
      if (name && state.current) { e.preventDefault(); toggle(name, e.shiftKey); }
      return;
    }
    if (e.key === "Enter") { e.preventDefault(); window.__timings.keyAt = performance.now(); saveAndNext(); return; }
    if (e.key === "ArrowRight") { e.preventDefault(); openPhoto(state.index + 1); return; }
    if (e.key === "ArrowLeft") { e.preventDefault(); openPhoto(state.index - 1); return; }
    if (e.code === "KeyU") { e.preventDefault(); undo(); return; }
    const name = state.byCode.get(e.code);
    if (name && state.current) { e.preventDefault(); toggle(name, e.shiftKey); }
  });
}
