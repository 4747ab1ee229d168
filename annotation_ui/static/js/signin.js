// Sign-in: when the gateway asks this browser for a token (another machine, or GATEWAY_AUTH=required), a dialog
// takes one and POST ../session turns it into an HttpOnly session cookie; the token itself is not kept by the page.
// A 401 later (the sign-in expired, or its token was revoked) brings the dialog back.
import { $ } from "./dom.js";

const sessionUrl = "../session";

async function session(options) {
  const response = await fetch(sessionUrl, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  return { ok: response.ok, body };
}

function showSignedIn(body) {
  const out = $("#sign-out");
  out.hidden = !body.signed_in;
  $("#signed-in-as").textContent = body.signed_in ? `(${body.name}, ${body.scope})` : "";
  if (body.signed_in && !localStorage.getItem("labeller")) $("#labeller").value = body.name;
}

function askForToken() {
  const dialog = $("#sign-in");
  return new Promise((resolve) => {
    const form = $("#sign-in-form");
    form.onsubmit = async (event) => {
      event.preventDefault();
      const token = $("#token").value.trim();
      const { ok, body } = await session({
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
      });
      $("#token").value = "";
      if (!ok) { $("#sign-in-error").textContent = body.error || "sign-in failed"; return; }
      $("#sign-in-error").textContent = "";
      dialog.close();
      resolve(body);
    };
    if (!dialog.open) dialog.showModal();
  });
}

// Resolves once this browser may use the page: at once when no token is asked, else after signing in.
export async function ensureSignedIn() {
  const { body } = await session();
  if (body.auth === "required" && !body.signed_in) {
    showSignedIn(await askForToken());
  } else {
    showSignedIn(body);
  }
}

export function installSignIn() {
  $("#sign-out").addEventListener("click", async () => {
    await session({ method: "DELETE" });
    location.reload();
  });
  // api.js announces a 401: sign in again, then reload what the page showed
  window.addEventListener("signin-needed", async () => {
    if ($("#sign-in").open) return;
    await askForToken();
    location.reload();
  });
}
