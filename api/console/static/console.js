// Live updates for the console's pages: one EventSource to /console/live (server-sent events
// fed by the projection's NOTIFYs); on each "changed" event the page fetches its live parts
// again and swaps them in. No polling: nothing is fetched while nothing changes.
"use strict";
(function () {
  const root = document.querySelector("[data-live]");
  if (!root || !window.EventSource || !window.fetch) return;

  let running = false;
  let again = false;

  // A part the person is working in (a reason being typed) is left alone until they are done.
  function inUse(part) {
    if (!part.hasAttribute("data-keep-while-typing")) return false;
    if (part.contains(document.activeElement) && document.activeElement !== document.body) return true;
    return Array.from(part.querySelectorAll("input:not([type=hidden]), textarea"))
      .some((field) => field.value.trim() !== "");
  }

  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      const answer = await fetch(window.location.href, {
        headers: { "X-Console-Fragment": "live" }, credentials: "same-origin", cache: "no-store",
      });
      if (answer.status === 401 || answer.status === 403 || answer.redirected) {
        window.location.reload(); // the session ended: the page itself says so
        return;
      }
      if (!answer.ok) return;
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
      fresh.querySelectorAll("[data-live-part]").forEach((part) => {
        const current = document.getElementById(part.id);
        if (current && !inUse(current)) current.replaceWith(document.importNode(part, true));
      });
      document.documentElement.dataset.liveUpdatedAt = String(Date.now());
    } catch (error) {
      // the next change tries again; EventSource reconnects by itself
    } finally {
      running = false;
      if (again) { again = false; setTimeout(refresh, 250); }
    }
  }

  const source = new EventSource(root.getAttribute("data-live"));
  source.addEventListener("open", () => {
    // The stream follows changes from the moment it opened: whatever changed between the
    // page's render and now (or while reconnecting) is fetched once here, else it would be lost.
    refresh();
    document.documentElement.dataset.live = "connected";
  });
  source.addEventListener("changed", refresh);
  window.addEventListener("pagehide", () => source.close());
})();
