// End-to-end test of the chat page in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core): a real node (the built binary, embedded store, dev login on), two browser
// contexts as two users. Alice is on a desktop-sized window and talks to the node directly; Bob
// is on a phone-sized one and reaches the node through a TCP proxy this test can cut, to drop
// and restore his connection.
//
// Run: `npm run test:e2e` in web/ (scripts/test.sh does, after building the node).
// Env: CHATNODE_BIN (default ../target/debug/chatnode), CHROMIUM (default /usr/bin/chromium),
// CHATNODE_E2E_ARTIFACTS (default ../target/e2e-artifacts): screenshots, browser console logs
// and the node's log land there; on failure, screenshots of both pages at the moment it failed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = process.env.CHATNODE_BIN || join(web, '../target/debug/chatnode');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.CHATNODE_E2E_ARTIFACTS || join(web, '../target/e2e-artifacts');
const GROUP = 'e2e';

// ---- The node ---------------------------------------------------------------------------------
async function startNode() {
  const dataDir = mkdtempSync(join(tmpdir(), 'chatnode-e2e-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, 'node.log'));
  const child = spawn(BIN, ['serve'], {
    env: {
      PATH: process.env.PATH,
      CHATNODE_LISTEN: '127.0.0.1:0',
      CHATNODE_DATA_DIR: dataDir,
      CHATNODE_WEB_DEV_LOGIN: 'true',
      CHATNODE_WORKERS: '2',
      RUST_LOG: 'info,fjall=warn,lsm_tree=warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr.pipe(log);
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error('the node did not start within 20 s')), 20000);
    child.once('exit', (code) => reject(new Error(`the node exited with ${code}; see ${ARTIFACTS}/node.log`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = line.match(/^chatnode listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
  });
  return {
    url,
    port: Number(new URL(url).port),
    // A token from `chatnode token`, signed with the secret this node generated.
    mint(user) {
      const out = spawnSync(BIN, ['token', '--user', user], {
        env: { PATH: process.env.PATH, CHATNODE_DATA_DIR: dataDir },
        encoding: 'utf8',
      });
      assert.equal(out.status, 0, out.stderr);
      return out.stdout.trim();
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// ---- A TCP proxy whose connections can be cut --------------------------------------------------
async function startProxy(targetPort) {
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', close);
      s.on('close', close);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      refusing = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      refusing = false;
    },
    close() {
      refusing = true;
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(r));
    },
  };
}

// ---- A small real PNG (the node sniffs uploads and makes thumbnails) ----------------------------
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
function makePng(width, height) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = Math.round((255 * x) / width);
      row[2 + x * 3] = 90;
      row[3 + x * 3] = Math.round((255 * y) / height);
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ---- Page helpers ----------------------------------------------------------------------------
function watch(page, name, problems, logs) {
  page.on('console', (m) => logs.push(`[${name}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => problems.push(`[${name}] uncaught: ${e.message}`));
}

async function signInWithToken(page, url, token) {
  await page.goto(url);
  await page.fill('#token-input', token);
  await page.fill('#token-group', GROUP);
  await page.click('#token-form button[type=submit]');
  await page.locator('#conn[data-state="online"]').waitFor();
}

async function signIn(page, url, user) {
  await page.goto(url);
  await page.locator('#dev-form').waitFor();
  await page.fill('#dev-user', user);
  await page.fill('#dev-group', GROUP);
  await page.click('#dev-form button[type=submit]');
  await page.locator('#conn[data-state="online"]').waitFor();
}

// REST calls as `user`, with a token from the dev login.
async function restAs(base, user) {
  const login = await fetch(`${base}/v1/dev/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  assert.equal(login.status, 200);
  const { token } = await login.json();
  return async (method, path, body) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
    return res.status === 204 ? null : res.json();
  };
}

const message = (page, text) => page.locator('#messages li.msg[data-id]', { hasText: text });
const unreadOf = (page, text, n) =>
  message(page, text).locator(`.unread[data-count="${n}"]`).waitFor({ state: 'attached' });

test('two users chat in the page: send, read counts, images, reconnect', { timeout: 180000 }, async () => {
  const node = await startNode();
  const proxy = await startProxy(node.port);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  const problems = [];
  const logs = [];
  const alice = await (await browser.newContext({ viewport: { width: 1100, height: 800 } })).newPage();
  const bob = await (
    await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 })
  ).newPage();
  watch(alice, 'alice', problems, logs);
  watch(bob, 'bob', problems, logs);
  for (const p of [alice, bob]) p.setDefaultTimeout(20000);
  let step = 'start';
  try {
    step = 'alice signs in with the dev login, bob with a token from `chatnode token`';
    await signIn(alice, node.url, 'alice');
    await signInWithToken(bob, proxy.url, node.mint('bob'));
    assert.equal(await bob.locator('#me').textContent(), 'bob');

    step = 'every form control has a label';
    const unlabelled = await alice.evaluate(() =>
      [...document.querySelectorAll('input, textarea, select')]
        .filter((el) => el.type !== 'hidden' && el.labels.length === 0 && !el.getAttribute('aria-label'))
        .map((el) => el.id || el.name),
    );
    assert.deepEqual(unlabelled, []);

    step = 'alice creates a room with bob; it appears in bob\'s chat list live';
    await alice.click('.new-room summary >> text=New chat');
    await alice.fill('#new-title', 'Lobby');
    await alice.fill('#new-members', 'bob');
    await alice.fill('#new-id', 'lobby');
    await alice.click('#new-room-form button[type=submit]');
    await alice.locator('#room-title', { hasText: 'Lobby' }).waitFor();
    await bob.locator('#rooms li[data-room="lobby"]').waitFor();

    step = 'alice sends; her message counts one unread; bob sees it in his chat list';
    await alice.fill('#composer-text', 'hello bob');
    await alice.press('#composer-text', 'Enter');
    await unreadOf(alice, 'hello bob', 1);
    await bob.locator('#rooms li[data-room="lobby"] .badge', { hasText: '1' }).waitFor();
    await bob.locator('#rooms li[data-room="lobby"] .last', { hasText: 'alice: hello bob' }).waitFor();

    step = 'bob opens the room (phone: the list gives way) and sees the message';
    await bob.click('#rooms li[data-room="lobby"] button');
    await message(bob, 'hello bob').waitFor();
    assert.equal(await bob.locator('#list-pane').isVisible(), false, 'on a phone the list hides while a room is open');
    await bob.locator('#presence', { hasText: 'alice' }).waitFor();

    step = 'alice sees the read count drop from 1 to 0';
    await unreadOf(alice, 'hello bob', 0);

    step = 'bob replies, alice sees it live, and typing shows';
    await bob.fill('#composer-text', 'hi alice');
    await alice.locator('#typing', { hasText: 'bob is typing' }).waitFor();
    await bob.press('#composer-text', 'Enter');
    await message(alice, 'hi alice').waitFor();
    await unreadOf(bob, 'hi alice', 0);

    step = 'alice edits her message and bob sees the edit';
    await message(alice, 'hello bob').locator('button', { hasText: 'Edit' }).click();
    await alice.fill('#composer-text', 'hello bob (edited)');
    await alice.press('#composer-text', 'Enter');
    await message(bob, 'hello bob (edited)').locator('.edited').waitFor();

    step = 'alice uploads an image and bob sees it inline';
    await alice.setInputFiles('#file-input', { name: 'gradient.png', mimeType: 'image/png', buffer: makePng(96, 64) });
    await message(alice, '').locator('img.media-img').first().waitFor();
    await bob.waitForFunction(() =>
      [...document.querySelectorAll('#messages img.media-img')].some((i) => i.complete && i.naturalWidth > 0),
    );

    step = 'bob sends a file and alice gets a download link with its name and size';
    await bob.setInputFiles('#file-input', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('minutes of the meeting\n') });
    const link = message(alice, 'notes.txt').locator('a.media-file');
    await link.waitFor();
    assert.match(await link.textContent(), /notes\.txt \(23 B\)/);
    const download = await alice.evaluate(async (href) => {
      const res = await fetch(href);
      return { status: res.status, disposition: res.headers.get('content-disposition'), body: await res.text() };
    }, await link.getAttribute('href'));
    assert.equal(download.status, 200);
    assert.match(download.disposition || '', /attachment/);
    assert.equal(download.body, 'minutes of the meeting\n');

    step = 'bob\'s connection is cut; alice sends meanwhile; her message counts one unread';
    proxy.cut();
    await bob.locator('#conn[data-state="offline"]').waitFor();
    await alice.locator('#presence', { hasText: 'here now: alice (you)' }).waitFor();
    await alice.fill('#composer-text', 'while you were away');
    await alice.press('#composer-text', 'Enter');
    await unreadOf(alice, 'while you were away', 1);
    await bob.waitForTimeout(1500);
    assert.equal(await message(bob, 'while you were away').count(), 0, 'bob is offline');

    step = 'the connection comes back; bob recovers the message and alice sees it read';
    proxy.restore();
    await bob.locator('#conn[data-state="online"]').waitFor({ timeout: 30000 });
    await message(bob, 'while you were away').waitFor();
    await unreadOf(alice, 'while you were away', 0);
    // Recovery brought exactly the one missed message, in order, with nothing doubled.
    const bobTexts = await bob.locator('#messages li.msg[data-id] .text').allTextContents();
    assert.deepEqual(bobTexts, ['hello bob (edited)', 'hi alice', 'while you were away']);

    step = 'bob deletes his message; both see the tombstone';
    bob.once('dialog', (d) => d.accept());
    await message(bob, 'hi alice').locator('button', { hasText: 'Delete' }).click();
    await message(alice, 'This message was deleted').waitFor();

    await alice.screenshot({ path: join(ARTIFACTS, 'chat-alice.png') });
    await bob.screenshot({ path: join(ARTIFACTS, 'chat-bob.png') });

    step = 'alice scrolls back through a long history, page by page';
    const api = await restAs(node.url, 'alice');
    await api('POST', `/v1/groups/${GROUP}/rooms`, { room: 'long', title: 'Long history', kind: 'group', members: ['bob'] });
    const TOTAL = 130;
    for (let i = 0; i < TOTAL; i++) {
      await api('POST', `/v1/groups/${GROUP}/rooms/long/messages`, { kind: 'text', text: `line ${i}`, cmid: `long-${i}` });
    }
    await alice.locator('#rooms li[data-room="long"]').waitFor();
    await alice.click('#rooms li[data-room="long"] button');
    await message(alice, `line ${TOTAL - 1}`).waitFor();
    assert.equal(await alice.locator('#messages li.msg[data-id]').count(), 50, 'the first page holds 50');
    for (let i = 0; i < 10 && !(await alice.locator('#history-state', { hasText: 'beginning' }).count()); i++) {
      await alice.locator('#scroller').evaluate((el) => { el.scrollTop = 0; });
      await alice.waitForTimeout(300);
    }
    const texts = await alice.locator('#messages li.msg[data-id] .text').allTextContents();
    assert.deepEqual(texts, Array.from({ length: TOTAL }, (_, i) => `line ${i}`), 'all of history, oldest first, once each');

    step = 'on a phone, back returns to the chat list';
    await bob.click('#back');
    await bob.locator('#rooms li[data-room="long"] .badge', { hasText: String(TOTAL) }).waitFor();

    step = 'no uncaught errors in either page';
    assert.deepEqual(problems, []);

  } catch (err) {
    mkdirSync(ARTIFACTS, { recursive: true });
    await alice.screenshot({ path: join(ARTIFACTS, 'failure-alice.png') }).catch(() => {});
    await bob.screenshot({ path: join(ARTIFACTS, 'failure-bob.png') }).catch(() => {});
    err.message = `step "${step}": ${err.message}\n(screenshots and logs in ${ARTIFACTS})${
      problems.length ? `\npage errors:\n${problems.join('\n')}` : ''
    }`;
    throw err;
  } finally {
    writeFileSync(join(ARTIFACTS, 'console.log'), logs.join('\n') + '\n');
    await browser.close();
    await proxy.close();
    await node.stop();
  }
});
