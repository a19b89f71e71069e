// Sign-in: exchange a token for the dashboard's session cookie (JSON, same origin).
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const error = document.getElementById("login-error");
  const button = document.getElementById("sign-in");
  input.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    try {
      const response = await fetch("/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ token: input.value.trim() }),
      });
      if (response.ok) {
        window.location.assign("/");
        return;
      }
      let message = "Sign-in failed (" + response.status + ")";
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) message = body.error.message;
      } catch (_) { /* not JSON: keep the status line */ }
      error.textContent = message;
      error.hidden = false;
    } catch (_) {
      error.textContent = "The server cannot be reached.";
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
})();
