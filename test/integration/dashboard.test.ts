import { mkdir } from 'node:fs/promises';
import type { Browser } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { launchChromium } from '../helpers/browser.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';

/** What page functions (run in the browser) see; the project's TypeScript has no DOM library. */
declare const document: { getElementById(id: string): { textContent: string | null } | null };

describe('dashboard in headless Chromium', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;
  let browser: Browser | undefined;

  afterEach(async () => {
    await browser?.close();
    await gw?.stop();
    await downstream?.close();
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
});
