// Keeps the page current: the server sends the page's new <main> over server-sent events
// whenever the cluster changes what it shows. Without this script the page still works; it is
// then as current as its last load.
"use strict";

(() => {
  const main = document.getElementById("view");
  const indicator = document.getElementById("live");

  const setState = (state, text) => {
    indicator.dataset.state = state;
    indicator.textContent = text;
  };

  // Like `kubectl get`'s AGE column, from the <time> elements' datetime.
  const ageText = (seconds) => {
    if (seconds < 120) return `${seconds}s`;
    if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
    if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
    return `${Math.floor(seconds / 86400)}d`;
  };

  const refreshAges = () => {
    const now = Date.now();
    for (const time of main.querySelectorAll("time[datetime]")) {
      const at = Date.parse(time.dateTime);
      if (Number.isNaN(at)) continue;
      const seconds = Math.max(0, Math.round((now - at) / 1000));
      if ("future" in time.dataset) {
        time.textContent = `in ${ageText(Math.max(0, Math.round((at - now) / 1000)))}`;
      } else if (time.textContent.endsWith(" ago")) {
        time.textContent = `${ageText(seconds)} ago`;
      } else {
        time.textContent = ageText(seconds);
      }
    }
  };

  const show = (event) => {
    // Sections the reader opened stay open across updates.
    const open = new Set(
      Array.from(main.querySelectorAll("details[open][id]"), (details) => details.id),
    );
    main.innerHTML = event.data;
    for (const id of open) {
      const details = document.getElementById(id);
      if (details) details.open = true;
    }
    main.dataset.version = event.lastEventId;
    refreshAges();
    setState("live", "live");
  };

  // `since` tells the server which version of the cluster the page shows, so it sends nothing
  // until something changes; the browser's own reconnects send the last event's id instead.
  let source = null;
  const connect = () => {
    const query = new URLSearchParams(location.search);
    query.set("since", main.dataset.version);
    source = new EventSource(`/live${location.pathname}?${query}`);
    source.addEventListener("open", () => setState("live", "live"));
    source.addEventListener("error", () => setState("reconnecting", "reconnecting…"));
    source.addEventListener("view", show);
  };

  // A page left for another keeps no stream open: browsers allow few connections per server,
  // and pages kept for the back button would hold them all.
  window.addEventListener("pagehide", () => {
    if (source) source.close();
    source = null;
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && !source) connect();
  });
  connect();

  setInterval(refreshAges, 5000);
})();
