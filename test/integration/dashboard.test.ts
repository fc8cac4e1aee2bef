import { mkdir } from 'node:fs/promises';
import type { Browser, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { launchChromium } from '../helpers/browser.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { subscribeSse, type SseSubscriber } from '../helpers/sse.js';

/** What page functions (run in the browser) see; the project's TypeScript has no DOM library. */
declare const document: { getElementById(id: string): { textContent: string | null; hidden?: boolean } | null };

interface HistoryBody {
  points: { received: Record<string, number> }[];
}

/** The text of each cell of a table row, by the row's id. */
async function cells(page: Page, rowId: string): Promise<string[]> {
  return page.locator(`[id="${rowId}"] td`).allTextContents();
}

describe('dashboard in headless Chromium', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;
  let browser: Browser | undefined;

  const subscribers: SseSubscriber[] = [];

  afterEach(async () => {
    for (const subscriber of subscribers.splice(0)) subscriber.close();
    await closeClients();
    await browser?.close();
    await gw?.stop();
    await downstream?.close();
    gw = undefined;
    downstream = undefined;
    browser = undefined;
  });

  it('shows live rates and a breaker turning open when the downstream fails', async () => {
    downstream = await startDownstream();
    gw = await startGateway(`
breakers:
  b: { volumeThreshold: 5, errorThresholdPercentage: 50, resetTimeout: 1m }
targets:
  orders: { type: http, url: "${downstream.url}/orders", breaker: b }
routes:
  - { name: orders, match: { key: "orders/#" }, to: [orders] }
`);
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${gw.admin}/dashboard`);
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'ready');
    await page.waitForFunction(() => document.getElementById('breaker-orders')?.textContent === 'closed');
    expect(await page.locator('#storage').textContent()).toBe('sync os');
    expect(await page.locator('#storage-detail').textContent()).toMatch(/MB queued · dead letters .* MB of 1024 MB$/);

    // Traffic while the page watches: the total rate tile must leave zero.
    const send = async (n: number) => {
      for (let i = 0; i < n; i++) await fetch(`${gw!.http}/v1/messages/orders/${i}`, { method: 'POST', body: '{}' });
    };
    // Bounded by what the page shows, not by time, so the breaker's window holds few successes.
    const rateShown = page.waitForFunction(() => Number(document.getElementById('rate-total')?.textContent) > 0, undefined, { timeout: 10_000 });
    let seen = false;
    void rateShown.then(() => { seen = true; }, () => undefined);
    for (let round = 0; round < 500 && !seen; round++) await send(5);
    await rateShown;

    // Failures until the error share of the 10 s window passes 50 %; the page must show it open.
    downstream.handler = (_req, res) => res.writeHead(500).end();
    const shown = page.waitForFunction(() => document.getElementById('breaker-orders')?.textContent === 'open', undefined, { timeout: 15_000 });
    let open = false;
    void shown.then(() => { open = true; }, () => undefined);
    for (let round = 0; round < 1000 && !open; round++) await send(10);
    await shown;
    expect(await page.locator('#changes li.breaker').first().textContent()).toContain('orders: breaker open');
    expect(Number(await page.locator('#target-orders td').nth(5).textContent())).toBeGreaterThan(0);
    await mkdir('artifacts', { recursive: true });
    await page.screenshot({ path: 'artifacts/dashboard.png', fullPage: true });
  });

  it('opens with the minutes before it and shows every panel with exact counts; the connections page lists who is connected', async () => {
    downstream = await startDownstream((_req, res) => res.writeHead(500).end());
    gw = await startGateway(`
breakers:
  b: { volumeThreshold: 100 }
targets:
  orders: { type: http, url: "${downstream.url}/orders", breaker: b }
defaultRoute: drop
routes:
  - { name: telemetry, match: { key: "devices/+/telemetry" }, to: [publish] }
  - { name: orders, match: { key: "orders/#" }, to: [orders] }
`, undefined, { listeners: ['mqtt'] });
    subscribers.push(await subscribeSse(gw.http, 'devices/#'), await subscribeSse(gw.http, 'devices/+/telemetry'));
    const device = await connectMqtt(gw.mqtt, { clientId: 'dash-device' });
    await device.client.subscribeAsync('orders/#');

    // Traffic before the page opens: the page must show it from the server's history.
    const post = (path: string, headers: Record<string, string> = {}) => fetch(`${gw!.http}/v1/messages/${path}`, { method: 'POST', body: '{}', headers });
    for (let i = 0; i < 5; i++) expect((await post(`devices/d${i}/telemetry`)).status).toBe(202);
    for (let i = 0; i < 3; i++) expect((await post(`orders/${i}`)).status).toBe(202);
    for (let i = 0; i < 2; i++) expect((await post('nowhere')).status).toBe(404);
    expect((await post('devices/d1/telemetry', { 'x-qos': '2' })).status).toBe(400);
    await eventually(() => expect(gw!.gateway.metrics.deadLetters()).toEqual({ orders: { failed: 3 } }), 10_000);
    await eventually(async () => {
      const history = (await (await fetch(`${gw!.admin}/dashboard/history`)).json()) as HistoryBody;
      expect(history.points.reduce((n, p) => n + Object.values(p.received).reduce((a, b) => a + b, 0), 0)).toBe(10);
    });

    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    await page.goto(`${gw.admin}/dashboard`);
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'ready');
    expect(await page.locator('#history-total').textContent()).toBe('10');
    expect(await page.locator('#no-targets').isHidden()).toBe(true);
    expect(await page.locator('#subscriptions').textContent()).toBe('3');
    // five telemetry messages published to subscribers; the three orders failed
    expect(await page.locator('#delivered-total').textContent()).toBe('5');
    expect((await cells(page, 'route-telemetry')).slice(0, 2)).toEqual(['telemetry', '5']);
    expect((await cells(page, 'route-orders')).slice(0, 2)).toEqual(['orders', '3']);
    expect((await cells(page, 'route-default')).slice(0, 2)).toEqual(['default', '2']);
    expect(await cells(page, 'rejection-no_route-http')).toEqual(['no_route', 'http', '2']);
    expect(await cells(page, 'rejection-bad_request-http')).toEqual(['bad_request', 'http', '1']);
    expect((await cells(page, 'deadletter-orders-failed')).slice(0, 3)).toEqual(['orders', 'failed', '3']);
    const listed = await page.locator('[id="deadletter-orders-failed"] a').getAttribute('href');
    expect(listed).toBe('/admin/deadletter?target=orders&reason=failed');
    const records = (await (await fetch(`${gw.admin}${listed!}`)).json()) as { count: number };
    expect(records.count).toBe(3);

    // The latency percentiles cover the last 10 s, however long the browser took to start.
    expect((await post('devices/d9/telemetry')).status).toBe(202);
    await page.waitForFunction(() => document.getElementById('latency-http') !== null);
    const latency = await cells(page, 'latency-http');
    expect(latency[0]).toBe('http');
    for (const percentile of latency.slice(1, 5)) expect(percentile).toMatch(/^\d+(\.\d+)? m?s$/);

    await mkdir('artifacts', { recursive: true });
    await page.screenshot({ path: 'artifacts/dashboard-panels.png', fullPage: true });

    await page.goto(`${gw.admin}/dashboard/connections`);
    await page.waitForFunction(() => document.getElementById('connection-dash-device') !== null);
    const mqttRow = await cells(page, 'connection-dash-device');
    expect([mqttRow[0], mqttRow[1], mqttRow[3], mqttRow[5]]).toEqual(['mqtt', 'dash-device', '–', '1']);
    const rows = await page.locator('#connections tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
    expect(rows.map((r) => [r[0], r[5]]).sort()).toEqual([['http', '1'], ['http', '1'], ['mqtt', '1']]);
    await page.screenshot({ path: 'artifacts/connections.png', fullPage: true });
  });

  it('says what to do when no targets are configured', async () => {
    gw = await startGateway('routes:\n  - { name: all, match: { key: "#" }, to: [publish] }\n');
    browser = await launchChromium();
    const page = await browser.newPage();
    await page.goto(`${gw.admin}/dashboard`);
    await page.waitForFunction(() => document.getElementById('no-targets')?.hidden === false);
    expect(await page.locator('#no-targets').textContent()).toContain('No targets are configured');
    expect(await page.locator('#targets tbody').textContent()).toBe('no targets configured');
  });
});
