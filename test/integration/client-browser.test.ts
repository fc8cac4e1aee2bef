import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import type { Browser } from 'playwright-core';
import { CHROMIUM, launchChromium } from '../helpers/browser.js';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { wsUrl } from '../helpers/ws.js';

/** What page functions (run in the browser) see; the project's TypeScript has no DOM library. */
declare const document: { body: { dataset: Record<string, string | undefined> } };

const CLIENT_DIR = fileURLToPath(new URL('../../src/client/', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../../artifacts/', import.meta.url));

/** The page a web app would be: it loads junction/client as plain ES modules and lists what arrives. */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Junction live feed</title>
<style>body { font: 16px system-ui, sans-serif; margin: 2rem } li { padding: .25rem 0 } .key { color: #555; margin-right: .5rem }</style>
</head><body>
<h1>Junction live feed</h1>
<p id="status">connecting…</p>
<ul id="messages"></ul>
<script type="module">
  import { connect } from '/client/index.js';
  const url = new URLSearchParams(location.search).get('ws');
  const status = document.getElementById('status');
  const client = await connect({ url, onStateChange: (state) => { status.textContent = state; } });
  const subscription = client.subscribe('demo/#', (delivery) => {
    const item = document.createElement('li');
    const key = document.createElement('span');
    key.className = 'key';
    key.textContent = delivery.key;
    item.append(key, delivery.text());
    document.getElementById('messages').append(item);
  });
  await subscription.ready;
  status.textContent = 'subscribed to demo/#';
  document.body.dataset.ready = 'true';
</script>
</body></html>`;

/**
 * Serves the page, and src/client/*.ts transpiled to JavaScript as the browser asks for each
 * module (their imports are relative with .js): exactly what tsc puts in dist/src/client/.
 */
async function startPageServer(): Promise<{ url: string; server: Server }> {
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://page').pathname;
    const module = /^\/client\/([a-z-]+)\.js$/.exec(path);
    if (path === '/') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
    } else if (module) {
      readFile(`${CLIENT_DIR}${module[1]}.ts`, 'utf8').then((source) => {
        const { outputText } = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
        response.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(outputText);
      }, () => response.writeHead(404).end());
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('junction/client in a browser', () => {
  let gw: TestGateway | undefined;
  let page: { url: string; server: Server } | undefined;
  let browser: Browser | undefined;

  beforeAll(async () => {
    // A missing browser is a failure, not a skip: .ci/run installs Debian's chromium.
    expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`).toBe(true);
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((resolve) => page?.server.close(resolve));
    await gw?.stop();
  });

  it('loads the client library, subscribes, and shows a message an MQTT client published', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt'] });
    page = await startPageServer();
    const tab = await browser!.newPage({ viewport: { width: 800, height: 400 } });
    const errors: string[] = [];
    tab.on('pageerror', (err) => errors.push(err.message));
    await tab.goto(`${page.url}/?ws=${encodeURIComponent(wsUrl(gw.http))}`);
    await tab.waitForFunction(() => document.body.dataset.ready === 'true', undefined, { timeout: 15_000 });

    const publisher = await mqtt.connectAsync(gw.mqtt);
    try {
      await publisher.publishAsync('demo/greeting', 'Hello from an MQTT client', { qos: 1 });
    } finally {
      await publisher.endAsync();
    }
    const item = tab.locator('#messages li', { hasText: 'Hello from an MQTT client' });
    await item.waitFor({ timeout: 15_000 });
    expect(await item.textContent()).toBe('demo/greetingHello from an MQTT client');
    expect(errors).toEqual([]);

    await mkdir(ARTIFACTS, { recursive: true });
    await tab.screenshot({ path: `${ARTIFACTS}websocket-browser.png` });
  }, 60_000);
});
