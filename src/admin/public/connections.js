/* Junction connections: who is connected, from /admin/connections, refreshed every two seconds. */
(function () {
  'use strict';
  const REFRESH_MS = 2000;
  const token = new URLSearchParams(location.search).get('token');
  const withToken = (path) => (token ? `${path}${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : path);
  const $ = (id) => document.getElementById(id);
  $('dashboard-link').href = withToken('/dashboard');

  function row(c) {
    const tr = document.createElement('tr');
    tr.id = `connection-${c.id}`;
    for (const value of [c.protocol, c.id, c.remoteAddress || '–', c.principal || '–', new Date(c.since).toLocaleString(), c.subscriptions]) {
      const td = document.createElement('td');
      td.textContent = String(value);
      tr.append(td);
    }
    return tr;
  }

  function refresh() {
    fetch(withToken('/admin/connections?limit=1000'))
      .then((response) => response.json())
      .then((body) => {
        $('counts').textContent = Object.entries(body.counts).map(([p, n]) => `${p} ${n}`).join(' · ');
        const list = body.connections.map(row);
        if (list.length === 0) {
          const td = document.createElement('td');
          td.colSpan = 6;
          td.className = 'empty';
          td.textContent = 'nobody is connected';
          const tr = document.createElement('tr');
          tr.append(td);
          list.push(tr);
        }
        $('connections').querySelector('tbody').replaceChildren(...list);
        $('updated').textContent = new Date().toLocaleTimeString();
      })
      .finally(() => setTimeout(refresh, REFRESH_MS));
  }
  refresh();
})();
