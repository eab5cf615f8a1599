// Tessera's web view (/ui): keeps the page live without a reload. The daemon sends the live
// part of the page as server-sent events (/ui/live) each time it changes; this swaps it in,
// keeping the keyboard focus on the same instance block. Without this script the page
// reloads itself every 5 s (a <noscript> refresh).
'use strict';
(function () {
  var live = document.getElementById('live');
  var status = document.getElementById('status');
  if (!live || !window.EventSource) {
    return;
  }
  function say(text, on) {
    if (status) {
      status.textContent = text;
      status.className = on ? 'live' : '';
    }
  }
  var since = live.getAttribute('data-since') || '';
  var source = new EventSource('/ui/live?since=' + encodeURIComponent(since));
  source.addEventListener('open', function () { say('live', true); });
  source.addEventListener('page', function (e) {
    var focused = document.activeElement;
    var key = focused && live.contains(focused) ? focused.getAttribute('data-key') : null;
    live.innerHTML = e.data;
    live.setAttribute('data-since', e.lastEventId || '');
    document.documentElement.setAttribute('data-updates',
      String(Number(document.documentElement.getAttribute('data-updates') || '0') + 1));
    if (key) {
      var blocks = live.querySelectorAll('[data-key]');
      for (var i = 0; i < blocks.length; i++) {
        if (blocks[i].getAttribute('data-key') === key) {
          blocks[i].focus();
          break;
        }
      }
    }
  });
  source.addEventListener('expired', function () {
    source.close();
    window.location.assign('/ui/login');
  });
  source.addEventListener('error', function () {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (the session ended) or gone: the page itself says which after a reload.
      say('disconnected', false);
      window.setTimeout(function () { window.location.reload(); }, 5000);
    } else {
      say('reconnecting…', false);
    }
  });
})();
