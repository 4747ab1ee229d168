// The page's API, relative to /annotate/: api/model, api/labels, api/photos, api/photo, PUT|DELETE
// api/photos/<id>/labels, api/progress, api/jobs, and the gateway's ../imgup and ../imginfo. Errors are
// {"error": message}; an answer that is not JSON is an error too, whatever its status.
async function json(response) {
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch {
    throw Object.assign(new Error(`HTTP ${response.status}: not JSON (${text.slice(0, 120)})`), { status: response.status });
  }
  if (response.status === 401) window.dispatchEvent(new Event("signin-needed"));  // signin.js asks again
  if (!response.ok) throw Object.assign(new Error(body.error || `HTTP ${response.status}`), { status: response.status });
  return body;
}

export const api = (path, options) => fetch(path, options).then(json);
export const q = (id) => encodeURIComponent(id);
export const send = (method, path, body) => api(path, {
  method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});
