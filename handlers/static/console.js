/* SIMS console: live incident board over server-sent events, and focus on error summaries.
   No inline script anywhere (the console's Content-Security-Policy forbids it). */
(function () {
  "use strict";

  function focusErrors() {
    var summary = document.querySelector("[data-focus]");
    if (summary) { summary.focus(); }
  }

  function liveBoard() {
    var table = document.querySelector("[data-board-events]");
    var body = document.getElementById("board-body");
    var status = document.querySelector("[data-live-status]");
    if (!table || !body || !window.EventSource) { return; }
    var source = new EventSource(table.getAttribute("data-board-events"));
    function say(text) { if (status) { status.textContent = text; } }
    source.addEventListener("open", function () { say("This board updates by itself."); });
    source.addEventListener("board", function (event) {
      if (body.innerHTML !== event.data) {
        body.innerHTML = event.data;  /* HTML escaped by the server's templates */
        say("Board updated at " + new Date().toLocaleTimeString("en-GB") + ".");
      }
    });
    var suppliers = document.getElementById("suppliers-body");
    source.addEventListener("suppliers", function (event) {
      if (suppliers && suppliers.innerHTML !== event.data) {
        suppliers.innerHTML = event.data;  /* HTML escaped by the server's templates */
      }
    });
    source.addEventListener("error", function () {
      say("Connection lost: reconnecting. The board may be out of date.");
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusErrors();
    liveBoard();
  });
}());
