/* Junction dashboard: draws the snapshots that /dashboard/events sends every second. */
(function () {
  'use strict';
  const WINDOW = 300; // seconds of history in the chart
  const PROTOCOLS = ['http', 'mqtt', 'ws', 'grpc', 'internal'];
  const token = new URLSearchParams(location.search).get('token');
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n >= 100 ? Math.round(n).toString() : n >= 10 ? n.toFixed(1) : n.toFixed(2));
  const ms = (s) => (s === Infinity ? '>10 s' : s >= 1 ? `${fmt(s)} s` : `${fmt(s * 1000)} ms`);
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);

  const times = [];
  const series = PROTOCOLS.map(() => []);
  let previous;
  const chart = new uPlot({
    width: Math.max(320, $('rates-chart').clientWidth || 800),
    height: 220,
    series: [{}, ...PROTOCOLS.map((p, i) => ({ label: p, stroke: ['#2563eb', '#16a34a', '#9333ea', '#ea580c', '#6b7280'][i], width: 2 }))],
    axes: [{}, { label: 'msg/s' }],
  }, [times, ...series], $('rates-chart'));

  function badge(el, state) {
    el.textContent = state.replace('_', '-');
    el.className = `badge state-${state}`;
  }

  function render(snap) {
    badge($('status'), snap.status);
    $('version').textContent = `config v${snap.version}`;
    $('updated').textContent = new Date(snap.t).toLocaleTimeString();
    if (previous) {
      const dt = (snap.t - previous.t) / 1000 || 1;
      const rate = (now, before, p) => Math.max(0, ((now[p] || 0) - (before[p] || 0)) / dt);
      times.push(snap.t / 1000);
      PROTOCOLS.forEach((p, i) => series[i].push(rate(snap.totals.received, previous.totals.received, p)));
      if (times.length > WINDOW) { times.shift(); series.forEach((s) => s.shift()); }
      chart.setData([times, ...series]);
      $('rate-total').textContent = fmt(Math.max(0, (sum(snap.totals.received) - sum(previous.totals.received)) / dt));
      $('rejected-total').textContent = fmt(Math.max(0, (sum(snap.totals.rejected) - sum(previous.totals.rejected)) / dt));
    }
    previous = snap;
    const ingress = Object.values(snap.latency.ingress);
    const p50 = Math.max(0, ...ingress.map((q) => q.p50));
    const p99 = Math.max(0, ...ingress.map((q) => q.p99));
    $('latency').textContent = ingress.length ? `${ms(p50)} / ${ms(p99)}` : '–';
    $('connections-total').textContent = String(sum(snap.connections));
    $('connections').textContent = Object.entries(snap.connections).map(([p, n]) => `${p} ${n}`).join(' · ');
    $('limiter').textContent = String(sum(snap.limiter));
    const mb = (bytes) => `${fmt(bytes / 1048576)} MB`;
    $('storage').textContent = `sync ${snap.storage.sync}`;
    $('storage-detail').textContent = `${mb(snap.storage.queuedBytes)} queued · dead letters ${mb(snap.storage.deadLetterBytes)} of ${mb(snap.storage.deadLetterMaxBytes)}`;

    const body = $('targets').querySelector('tbody');
    body.replaceChildren(...Object.entries(snap.targets).map(([name, t]) => {
      const row = document.createElement('tr');
      row.id = `target-${name}`;
      const call = snap.latency.targets[name];
      const cells = [name, '', t.queued, t.inFlight, t.delivered, t.deadLettered, t.shed, call ? `${ms(call.p50)} / ${ms(call.p99)}` : '–'];
      cells.forEach((value, i) => {
        const td = document.createElement('td');
        if (i === 1) {
          const b = document.createElement('span');
          b.id = `breaker-${name}`;
          badge(b, t.breaker);
          td.append(b);
        } else td.textContent = String(value);
        row.append(td);
      });
      return row;
    }));
    $('changes').replaceChildren(...snap.changes.map((c) => {
      const li = document.createElement('li');
      li.className = c.kind;
      li.textContent = `${new Date(c.at).toLocaleTimeString()} ${c.target ? `${c.target}: ` : ''}${c.text}`;
      return li;
    }));
  }

  const events = new EventSource(`/dashboard/events${token ? `?token=${encodeURIComponent(token)}` : ''}`);
  events.onmessage = (e) => render(JSON.parse(e.data));
  events.onerror = () => badge($('status'), 'disconnected');
})();
