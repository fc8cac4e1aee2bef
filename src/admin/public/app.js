/* Junction dashboard: the last five minutes from /dashboard/history, then the snapshots /dashboard/events sends every second. */
(function () {
  'use strict';
  const WINDOW = 300; // intervals of history in the chart
  const PROTOCOLS = ['http', 'mqtt', 'ws', 'grpc', 'internal'];
  const token = new URLSearchParams(location.search).get('token');
  const withToken = (path) => (token ? `${path}${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : path);
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n >= 100 ? Math.round(n).toString() : n >= 10 ? n.toFixed(1) : n.toFixed(2));
  const ms = (s) => (s >= 1 ? `${fmt(s)} s` : `${fmt(s * 1000)} ms`);
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);

  const times = [];
  const series = PROTOCOLS.map(() => []);
  /** the intervals the chart holds, for the five-minute total */
  const points = [];
  const chart = new uPlot({
    width: Math.max(320, $('rates-chart').clientWidth || 800),
    height: 220,
    series: [{}, ...PROTOCOLS.map((p, i) => ({ label: p, stroke: ['#2563eb', '#16a34a', '#9333ea', '#ea580c', '#6b7280'][i], width: 2 }))],
    axes: [{}, { label: 'msg/s' }],
  }, [times, ...series], $('rates-chart'));
  $('connections-link').href = withToken('/dashboard/connections');

  function badge(el, state) {
    el.textContent = state.replace('_', '-');
    el.className = `badge state-${state}`;
  }

  /** Adds one interval to the chart and the tiles that follow the newest interval. */
  function addPoint(point) {
    if (points.length > 0 && point.t <= points[points.length - 1].t) return;
    points.push(point);
    const seconds = point.dt / 1000;
    times.push(point.t / 1000);
    PROTOCOLS.forEach((p, i) => series[i].push((point.received[p] || 0) / seconds));
    if (times.length > WINDOW) {
      times.shift();
      series.forEach((s) => s.shift());
      points.shift();
    }
    chart.setData([times, ...series]);
    $('rate-total').textContent = fmt(sum(point.received) / seconds);
    $('rejected-total').textContent = fmt(point.rejected / seconds);
    $('delivered-rate').textContent = fmt(point.delivered / seconds);
    $('history-total').textContent = String(points.reduce((total, p) => total + sum(p.received), 0));
  }

  function cell(value) {
    const td = document.createElement('td');
    if (value instanceof Node) td.append(value);
    else td.textContent = String(value);
    return td;
  }

  /** Replaces a table's rows; `empty` is said in one row when there are none. */
  function rows(table, list, empty) {
    const body = $(table).querySelector('tbody');
    if (list.length === 0) {
      const td = cell(empty);
      td.colSpan = $(table).querySelectorAll('th').length;
      td.className = 'empty';
      const tr = document.createElement('tr');
      tr.append(td);
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...list.map(({ id, cells }) => {
      const tr = document.createElement('tr');
      if (id) tr.id = id;
      tr.append(...cells.map(cell));
      return tr;
    }));
  }

  function render(snap) {
    badge($('status'), snap.status);
    $('version').textContent = `config v${snap.version}`;
    $('updated').textContent = new Date(snap.t).toLocaleTimeString();
    if (snap.point) addPoint(snap.point);
    const ingress = Object.values(snap.latency.ingress);
    $('latency').textContent = ingress.length ? `${ms(Math.max(...ingress.map((q) => q.p50)))} / ${ms(Math.max(...ingress.map((q) => q.p99)))}` : '–';
    $('connections-total').textContent = String(sum(snap.connections));
    $('connections').textContent = Object.entries(snap.connections).map(([p, n]) => `${p} ${n}`).join(' · ');
    $('subscriptions').textContent = String(snap.subscriptions);
    $('limiter').textContent = String(sum(snap.limiter));
    $('delivered-total').textContent = String(snap.delivered);
    $('no-targets').hidden = Object.keys(snap.targets).length > 0;
    const slow = Object.entries(snap.slowConsumers);
    $('slow-consumers').textContent = `${sum(Object.fromEntries(slow.map(([p, c]) => [p, c.disconnected])))} cut`;
    $('slow-consumers-detail').textContent = slow.map(([p, c]) => `${p} ${c.shed} shed, ${c.disconnected} cut`).join(' · ');
    const mb = (bytes) => `${fmt(bytes / 1048576)} MB`;
    $('storage').textContent = `sync ${snap.storage.sync}`;
    $('storage-detail').textContent = `${mb(snap.storage.queuedBytes)} queued · dead letters ${mb(snap.storage.deadLetterBytes)} of ${mb(snap.storage.deadLetterMaxBytes)}`;

    rows('targets', Object.entries(snap.targets).map(([name, t]) => {
      const breaker = document.createElement('span');
      breaker.id = `breaker-${name}`;
      badge(breaker, t.breaker);
      const call = snap.latency.targets[name];
      return { id: `target-${name}`, cells: [name, breaker, t.queued, t.inFlight, t.delivered, t.deadLettered, t.shed, call ? `${ms(call.p50)} / ${ms(call.p99)}` : '–'] };
    }), 'no targets configured');
    rows('routes', snap.routes.map((r) => ({ id: `route-${r.name}`, cells: [r.name, r.total, fmt(r.perSecond)] })), 'no rules');
    rows('latencies', Object.entries(snap.latency.ingress).map(([protocol, q]) => ({
      id: `latency-${protocol}`, cells: [protocol, ms(q.p50), ms(q.p90), ms(q.p99), ms(q.max), q.count],
    })), 'no messages in the last 10 s');
    rows('rejections', Object.entries(snap.rejections).flatMap(([protocol, codes]) => Object.entries(codes).map(([code, n]) => ({
      id: `rejection-${code}-${protocol}`, cells: [code, protocol, n],
    }))), 'none since start');
    rows('deadletters', Object.entries(snap.deadLetters).flatMap(([target, reasons]) => Object.entries(reasons).map(([reason, n]) => {
      const link = document.createElement('a');
      link.textContent = 'list';
      link.href = withToken(`/admin/deadletter?target=${encodeURIComponent(target)}&reason=${encodeURIComponent(reason)}`);
      return { id: `deadletter-${target}-${reason}`, cells: [target, reason, n, link] };
    })), 'none since start');
    $('changes').replaceChildren(...snap.changes.map((c) => {
      const li = document.createElement('li');
      li.className = c.kind;
      li.textContent = `${new Date(c.at).toLocaleTimeString()} ${c.target ? `${c.target}: ` : ''}${c.text}`;
      return li;
    }));
  }

  fetch(withToken('/dashboard/history'))
    .then((response) => response.json())
    .then((history) => history.points.forEach(addPoint))
    .finally(() => {
      const events = new EventSource(withToken('/dashboard/events'));
      events.onmessage = (e) => render(JSON.parse(e.data));
      events.onerror = () => badge($('status'), 'disconnected');
    });
})();
