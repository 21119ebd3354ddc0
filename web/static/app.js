// chatnode's chat page. Speaks docs/protocol.md §3 (WebSocket, one MessagePack frame per binary
// message) and a little of §4 and §6 (the chat list, room details and uploads over REST).
//
// Message ids are u64 and exceed 2^53, so they are BigInt here (the decoder turns 64-bit
// integers into BigInt; smaller ones arrive as numbers and go through `id()`). The DOM is built
// with createElement and textContent only: nothing a user typed is ever parsed as HTML.
'use strict';

(() => {
  const MP = window.MessagePack;
  const encoder = new MP.Encoder({ useBigInt64: true, ignoreUndefined: true });
  const decoder = new MP.Decoder({ useBigInt64: true });

  const $ = (sel) => document.querySelector(sel);
  const id = (v) => (typeof v === 'bigint' ? v : BigInt(v));
  const num = (v) => (v === undefined || v === null ? v : Number(v));
  const REQUEST_TIMEOUT_MS = 15000;
  const PAGE = 50;

  // ---- DOM helper -------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) el.append(c);
    return el;
  }

  // ---- State ------------------------------------------------------------------------------
  const S = {
    token: null,
    group: null,
    me: null,
    ws: null,
    ready: false, // `hello` seen on the current socket
    nextR: 1,
    pending: new Map(), // r -> {resolve, reject, timer}
    attempts: 0,
    reconnectTimer: null,
    pingTimer: null,
    heartbeat: 30,
    limits: { text: 16384 },
    rooms: new Map(), // room id -> chat-list entry
    room: null, // the open room (see openRoom)
    outbox: new Map(), // cmid -> send frame, until `sent`
    lastTypingSent: 0,
    hiddenTimer: null,
  };

  // ---- Errors shown to people ---------------------------------------------------------------
  class ChatError extends Error {
    constructor(code, message) {
      super(message || code);
      this.code = code;
    }
  }
  function showRoomError(text) {
    const el = $('#room-error');
    el.textContent = text;
    el.hidden = !text;
  }
  function describe(err) {
    if (err instanceof ChatError) return `${err.message} (${err.code})`;
    return err && err.message ? err.message : String(err);
  }

  // ---- REST ---------------------------------------------------------------------------------
  async function rest(method, path, body, { raw, contentType } = {}) {
    const headers = { Authorization: `Bearer ${S.token}` };
    let payload;
    if (raw !== undefined) {
      payload = raw;
      headers['Content-Type'] = contentType || 'application/octet-stream';
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    const res = await fetch(path, { method, headers, body: payload });
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const e = data && data.error;
      if (res.status === 401) signOut('Your sign-in has expired or is not valid. Sign in again.');
      throw new ChatError(e ? e.code : `http_${res.status}`, e ? e.message : res.statusText);
    }
    return data;
  }
  const groupPath = () => `/v1/groups/${encodeURIComponent(S.group)}/rooms`;
  const mediaUrl = (mediaId, thumb) =>
    `/v1/media/${encodeURIComponent(mediaId)}${thumb ? '/thumbnail' : ''}?token=${encodeURIComponent(S.token)}`;

  // ---- WebSocket ----------------------------------------------------------------------------
  function setConn(state, text) {
    const el = $('#conn');
    el.dataset.state = state;
    el.textContent = text;
  }

  function connect() {
    clearTimeout(S.reconnectTimer);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/v1/ws?token=${encodeURIComponent(S.token)}`);
    ws.binaryType = 'arraybuffer';
    S.ws = ws;
    S.ready = false;
    setConn('connecting', S.attempts ? 'Reconnecting…' : 'Connecting…');
    ws.onmessage = (ev) => {
      if (S.ws !== ws) return;
      let frame;
      try {
        frame = decoder.decode(new Uint8Array(ev.data));
      } catch (e) {
        console.warn('undecodable frame', e);
        return;
      }
      if (frame && typeof frame === 'object') onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (S.ws !== ws) return;
      onDisconnect(ev.code, S.ready);
    };
  }

  function onDisconnect(code, wasReady) {
    S.ready = false;
    S.ws = null;
    clearInterval(S.pingTimer);
    for (const [, p] of S.pending) {
      clearTimeout(p.timer);
      p.reject(new ChatError('offline', 'the connection dropped'));
    }
    S.pending.clear();
    if (!S.token) return;
    if (code === 4001) {
      signOut('Your sign-in has expired. Sign in again.');
      return;
    }
    setConn('offline', 'Offline: reconnecting…');
    if (!wasReady) {
      // The upgrade itself failed: a refused token looks like any network error from here,
      // so ask over HTTP (a 401 signs out).
      rest('GET', groupPath()).catch(() => {});
    }
    const delay = Math.min(5000, 250 * 2 ** S.attempts) * (0.75 + Math.random() * 0.5);
    S.attempts += 1;
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function send(frame) {
    if (!S.ws || !S.ready) return false;
    S.ws.send(encoder.encode(frame));
    return true;
  }

  function request(frame) {
    return new Promise((resolve, reject) => {
      if (!S.ws || !S.ready) {
        reject(new ChatError('offline', 'not connected'));
        return;
      }
      const r = S.nextR;
      S.nextR = S.nextR >= 0x7fffffff ? 1 : S.nextR + 1;
      const timer = setTimeout(() => {
        S.pending.delete(r);
        reject(new ChatError('timeout', 'the server did not answer'));
      }, REQUEST_TIMEOUT_MS);
      S.pending.set(r, { resolve, reject, timer });
      S.ws.send(encoder.encode({ ...frame, r }));
    });
  }

  function onFrame(f) {
    if (f.r !== undefined && f.r !== null) {
      const p = S.pending.get(num(f.r));
      if (p) {
        S.pending.delete(num(f.r));
        clearTimeout(p.timer);
        if (f.t === 'err') p.reject(new ChatError(f.code, f.message));
        else p.resolve(f);
        return;
      }
    }
    switch (f.t) {
      case 'hello': return onHello(f);
      case 'msg': return onMsg(f);
      case 'receipt': return onReceipt(f);
      case 'presence': return onPresence(f);
      case 'typing': return onTyping(f);
      case 'edited': return onEdited(f);
      case 'deleted': return onDeleted(f);
      case 'room': return onRoomEvent(f);
      case 'err': showRoomError(`${f.message} (${f.code})`); return;
      default: return; // Unknown frames are ignored (the contract may grow).
    }
  }

  async function onHello(f) {
    S.ready = true;
    S.me = f.user;
    S.heartbeat = Math.max(5, num(f.heartbeat) || 30);
    if (f.limits) S.limits = { text: num(f.limits.text) || S.limits.text };
    $('#me').textContent = S.me;
    const recovering = S.attempts > 0;
    S.attempts = 0;
    setConn('online', 'Online');
    startPings();
    try {
      await request({ t: 'sub', group: S.group });
      await loadRooms();
      if (S.room) await enterRoom(S.room, recovering);
      await flushOutbox();
    } catch (e) {
      if (e.code !== 'offline') showRoomError(describe(e));
    }
  }

  // Application-level pings find a connection that died silently (no FIN, no RST).
  function startPings() {
    clearInterval(S.pingTimer);
    const ws = S.ws;
    S.pingTimer = setInterval(() => {
      if (S.ws !== ws || !S.ready) return;
      request({ t: 'ping' }).catch((e) => {
        if (e.code === 'timeout' && S.ws === ws) ws.close(4000, 'no pong');
      });
    }, S.heartbeat * 1000);
  }

  // ---- Chat list ----------------------------------------------------------------------------
  async function loadRooms() {
    const list = await rest('GET', groupPath());
    S.rooms = new Map(list.map((r) => [r.room, r]));
    renderRooms();
  }

  let roomsReload = null;
  function reloadRoomsSoon() {
    clearTimeout(roomsReload);
    roomsReload = setTimeout(() => loadRooms().catch(() => {}), 150);
  }

  function activity(r) {
    return r.last ? Number(r.last.ts) : 0;
  }

  function summary(last) {
    if (!last) return '';
    const who = last.from === S.me ? 'You' : last.from;
    const what = last.kind === 'text' ? last.text || '' : `[${last.kind}]`;
    return `${who}: ${what}`;
  }

  function renderRooms() {
    const ul = $('#rooms');
    const rooms = [...S.rooms.values()].sort((a, b) => activity(b) - activity(a));
    ul.replaceChildren(
      ...rooms.map((r) => {
        const open = S.room && S.room.id === r.room;
        const unread = open ? 0 : num(r.unread) || 0;
        return h(
          'li',
          { 'data-room': r.room, 'aria-current': open ? 'true' : null },
          h(
            'button',
            {
              type: 'button',
              onclick: () => openRoom(r.room),
              'aria-label': `${r.title || r.room}${unread ? `, ${unread} unread` : ''}`,
            },
            h('span', { class: 'title', text: r.title || r.room }),
            h('span', { class: 'last', text: summary(r.last) }),
            unread ? h('span', { class: 'badge', 'data-count': unread, text: unread > 999 ? '999+' : String(unread) }) : null,
          ),
        );
      }),
    );
    $('#rooms-empty').hidden = rooms.length > 0;
  }

  function onRoomEvent(f) {
    if (f.group !== S.group) return;
    const entry = S.rooms.get(f.room);
    switch (f.kind) {
      case 'updated':
        if (!entry) return reloadRoomsSoon();
        if (f.last) entry.last = f.last;
        if (f.unread !== undefined) entry.unread = num(f.unread);
        return renderRooms();
      case 'deleted':
        S.rooms.delete(f.room);
        if (S.room && S.room.id === f.room) closeRoom('This chat was deleted.');
        return renderRooms();
      default: // created, members, and kinds added later
        return reloadRoomsSoon();
    }
  }

  // ---- Room ---------------------------------------------------------------------------------
  function newRoomState(roomId) {
    return {
      id: roomId,
      info: null, // GET room details: title, owner, members
      msgs: new Map(), // id string -> message
      oldest: null,
      latest: null,
      more: false,
      loadingOlder: false,
      present: new Set(),
      members: 0,
      typing: new Map(), // user -> timer
      skipReceipt: null, // our own entering's receipt, already counted in `entered`
      editing: null,
    };
  }

  async function openRoom(roomId) {
    if (S.room && S.room.id === roomId) {
      showView('room');
      return;
    }
    if (S.room) {
      const old = S.room;
      send({ t: 'leave', group: S.group, room: old.id });
    }
    const room = newRoomState(roomId);
    S.room = room;
    const entry = S.rooms.get(roomId);
    if (entry) entry.unread = 0;
    renderRooms();
    $('#no-room').hidden = true;
    $('#room').hidden = false;
    $('#room-title').textContent = entry ? entry.title || roomId : roomId;
    $('#messages').replaceChildren();
    $('#typing').textContent = '';
    $('#history-state').textContent = '';
    showRoomError('');
    cancelEdit();
    showView('room');
    rest('GET', `${groupPath()}/${encodeURIComponent(roomId)}`)
      .then((info) => {
        if (S.room !== room) return;
        room.info = info;
        $('#room-title').textContent = info.title || roomId;
        renderPresence();
        rerenderAll();
      })
      .catch((e) => showRoomError(describe(e)));
    try {
      await enterRoom(room, false);
    } catch (e) {
      if (e.code !== 'offline') showRoomError(describe(e));
    }
    $('#composer-text').focus();
  }

  // `enter`, or on reconnect `enter since` the latest message shown, paging on while `more`.
  async function enterRoom(room, recovering) {
    const since = recovering && room.latest !== null ? room.latest : undefined;
    let f = await request({ t: 'enter', group: S.group, room: room.id, since, limit: since !== undefined ? 200 : PAGE });
    if (S.room !== room) return;
    applyEntered(room, f, since === undefined);
    while (since !== undefined && f.more && room.latest !== null) {
      f = await request({ t: 'enter', group: S.group, room: room.id, since: room.latest, limit: 200 });
      if (S.room !== room) return;
      applyEntered(room, f, false);
    }
    if (recovering) await refreshUnread(room);
  }

  function applyEntered(room, f, latestPage) {
    room.members = num(f.members) || 0;
    room.present = new Set(f.present || []);
    room.skipReceipt = { from: id(f.cursor) };
    const stick = nearBottom();
    addMessages(room, f.msgs || []);
    if (latestPage) {
      room.more = !!f.more;
      updateHistoryState(room);
    }
    renderPresence();
    if (stick || latestPage) scrollToBottom();
  }

  // Receipts missed while offline left older counts stale: re-read the latest page's counts.
  async function refreshUnread(room) {
    if (room.latest === null) return;
    const f = await request({ t: 'history', group: S.group, room: room.id, before: room.latest + 1n, limit: PAGE });
    if (S.room !== room) return;
    for (const m of f.msgs || []) {
      const known = room.msgs.get(String(id(m.id)));
      if (known && num(m.unread) !== known.unread) {
        known.unread = num(m.unread);
        renderMessage(room, known);
      }
    }
  }

  async function loadOlder(room) {
    if (!room.more || room.loadingOlder || room.oldest === null || !S.ready) return;
    room.loadingOlder = true;
    $('#history-state').textContent = 'Loading older messages…';
    try {
      const f = await request({ t: 'history', group: S.group, room: room.id, before: room.oldest, limit: PAGE });
      if (S.room !== room) return;
      const scroller = $('#scroller');
      const before = scroller.scrollHeight;
      addMessages(room, f.msgs || []);
      room.more = !!f.more;
      scroller.scrollTop += scroller.scrollHeight - before;
    } catch (e) {
      if (e.code !== 'offline') showRoomError(describe(e));
    } finally {
      room.loadingOlder = false;
      updateHistoryState(room);
    }
  }

  function updateHistoryState(room) {
    $('#history-state').textContent = room.more ? '' : room.msgs.size ? 'The beginning of this chat' : 'No messages yet';
  }

  function closeRoom(notice) {
    S.room = null;
    $('#room').hidden = true;
    $('#no-room').hidden = false;
    $('#no-room').firstElementChild.textContent = notice || 'Choose a chat.';
    showView('list');
    renderRooms();
  }

  function showView(view) {
    $('#app').dataset.view = view;
  }

  // ---- Messages -----------------------------------------------------------------------------
  function normalize(m) {
    return {
      id: id(m.id),
      from: m.from,
      kind: m.kind,
      text: m.text,
      media: m.media,
      ts: num(m.ts),
      unread: num(m.unread) || 0,
      cmid: m.cmid,
      edited: num(m.edited),
      deleted: !!m.deleted,
    };
  }

  function addMessages(room, list) {
    for (const raw of list) {
      const m = normalize(raw);
      const key = String(m.id);
      if (room.msgs.has(key)) continue;
      room.msgs.set(key, m);
      if (room.oldest === null || m.id < room.oldest) room.oldest = m.id;
      if (room.latest === null || m.id > room.latest) room.latest = m.id;
      insertMessage(room, m);
      if (m.cmid && m.from === S.me) removePending(m.cmid);
    }
  }

  // Keeps the list in id order: live messages append, history prepends.
  function insertMessage(room, m) {
    const ol = $('#messages');
    const li = renderMessage(room, m);
    let next = null;
    for (let el = ol.lastElementChild; el; el = el.previousElementSibling) {
      if (el.dataset.pending !== undefined) { next = el; continue; }
      if (id(el.dataset.id) > m.id) next = el;
      else break;
    }
    ol.insertBefore(li, next);
  }

  function rerenderAll() {
    if (!S.room) return;
    for (const m of S.room.msgs.values()) renderMessage(S.room, m);
  }

  function canDelete(room, m) {
    return !m.deleted && (m.from === S.me || (room.info && room.info.owner === S.me));
  }

  function formatTime(ts) {
    const d = new Date(ts);
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function formatSize(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function mediaElement(m) {
    const media = m.media;
    if (!media) return null;
    const name = media.name || media.type;
    if (m.kind === 'image') {
      return h(
        'a',
        { href: mediaUrl(media.id, false), target: '_blank', rel: 'noopener noreferrer' },
        h('img', {
          class: 'media-img',
          src: mediaUrl(media.id, !!media.thumbnail),
          alt: media.name ? `Photo: ${media.name}` : 'Photo',
          loading: 'lazy',
          referrerpolicy: 'no-referrer',
          // A photo that loads at the bottom of the list keeps the list scrolled to the end.
          onload: (ev) => {
            if (nearBottom(ev.target.offsetHeight + 80)) scrollToBottom();
          },
        }),
      );
    }
    if (m.kind === 'video') {
      return h('video', { class: 'media-video', src: mediaUrl(media.id, false), controls: true, preload: 'metadata', 'aria-label': `Video: ${name}` });
    }
    return h('a', { class: 'media-file', href: mediaUrl(media.id, false), rel: 'noopener noreferrer', download: media.name || '' },
      `📎 ${name} (${formatSize(num(media.size) || 0)})`);
  }

  function renderMessage(room, m) {
    const key = String(m.id);
    const mine = m.from === S.me;
    const body = m.deleted
      ? h('span', { class: 'text', text: 'This message was deleted' })
      : h('div', {}, mediaElement(m), m.text ? h('span', { class: 'text', text: m.text }) : null);
    const actions = [];
    if (mine && !m.deleted && m.kind === 'text') {
      actions.push(h('button', { type: 'button', class: 'link', text: 'Edit', onclick: () => startEdit(m) }));
    }
    if (canDelete(room, m)) {
      actions.push(h('button', { type: 'button', class: 'link', text: 'Delete', onclick: () => deleteMessage(m) }));
    }
    const li = h(
      'li',
      { class: `msg${mine ? ' mine' : ''}${m.deleted ? ' deleted' : ''}`, 'data-id': key, 'data-from': m.from },
      h('div', { class: 'bubble' }, h('span', { class: 'from', text: m.from }), body),
      h(
        'div',
        { class: 'meta' },
        h('span', { class: 'unread', 'data-count': m.unread, 'aria-label': `${m.unread} unread`, text: String(m.unread) }),
        m.edited ? h('span', { class: 'edited', text: 'edited' }) : null,
        h('time', { datetime: new Date(m.ts).toISOString(), text: formatTime(m.ts) }),
        actions.length ? h('span', { class: 'actions' }, ...actions) : null,
      ),
    );
    const old = document.querySelector(`#messages li[data-id="${key}"]`);
    if (old) old.replaceWith(li);
    return li;
  }

  function nearBottom(slack = 80) {
    const s = $('#scroller');
    return s.scrollHeight - s.scrollTop - s.clientHeight < slack;
  }
  function scrollToBottom() {
    const s = $('#scroller');
    s.scrollTop = s.scrollHeight;
  }

  // The open room, when an event is about it; null otherwise.
  function openRoomOf(f) {
    const room = S.room;
    return room && f.group === S.group && f.room === room.id ? room : null;
  }

  function onMsg(f) {
    const room = openRoomOf(f);
    if (!room) return;
    const stick = nearBottom() || f.from === S.me;
    addMessages(room, [f]);
    // The chat list gets no `room` events for the open room: keep its line current here.
    const entry = S.rooms.get(room.id);
    if (entry) {
      entry.last = { id: f.id, from: f.from, kind: f.kind, text: f.text ? String(f.text).slice(0, 100) : undefined, ts: num(f.ts) };
      entry.unread = 0;
      renderRooms();
    }
    clearTypist(room, f.from);
    updateHistoryState(room);
    if (stick) scrollToBottom();
  }

  function onReceipt(f) {
    const room = openRoomOf(f);
    if (!room) return;
    const from = id(f.from);
    const to = id(f.to);
    if (f.user === S.me && room.skipReceipt && room.skipReceipt.from === from) {
      room.skipReceipt = null; // our own `enter`: `entered` already counted it
      return;
    }
    for (const m of room.msgs.values()) {
      if (m.id > from && m.id <= to && m.unread > 0) {
        m.unread -= 1;
        const badge = document.querySelector(`#messages li[data-id="${m.id}"] .unread`);
        if (badge) {
          badge.dataset.count = m.unread;
          badge.textContent = String(m.unread);
          badge.setAttribute('aria-label', `${m.unread} unread`);
        }
      }
    }
  }

  function onPresence(f) {
    const room = openRoomOf(f);
    if (!room) return;
    if (f.present) room.present.add(f.user);
    else room.present.delete(f.user);
    renderPresence();
  }

  function renderPresence() {
    const room = S.room;
    if (!room) return;
    const members = room.info ? room.info.members.length : room.members;
    const here = [...room.present].sort().map((u) => (u === S.me ? `${u} (you)` : u));
    $('#presence').textContent = `${members} member${members === 1 ? '' : 's'} · here now: ${here.join(', ') || 'nobody'}`;
  }

  function onTyping(f) {
    const room = openRoomOf(f);
    if (!room || f.user === S.me) return;
    clearTimeout(room.typing.get(f.user));
    room.typing.set(f.user, setTimeout(() => clearTypist(room, f.user), 3000));
    renderTyping(room);
  }
  function clearTypist(room, user) {
    if (!room.typing.has(user)) return;
    clearTimeout(room.typing.get(user));
    room.typing.delete(user);
    renderTyping(room);
  }
  function renderTyping(room) {
    const users = [...room.typing.keys()];
    $('#typing').textContent = users.length ? `${users.join(', ')} ${users.length === 1 ? 'is' : 'are'} typing…` : '';
  }

  function onEdited(f) {
    const room = openRoomOf(f);
    if (!room) return;
    const m = room.msgs.get(String(id(f.id)));
    if (!m) return;
    m.text = f.text;
    m.edited = num(f.edited) || Date.now();
    renderMessage(room, m);
  }

  function onDeleted(f) {
    const room = openRoomOf(f);
    if (!room) return;
    const m = room.msgs.get(String(id(f.id)));
    if (!m) return;
    m.deleted = true;
    m.text = undefined;
    m.media = undefined;
    renderMessage(room, m);
    if (room.editing && room.editing.id === m.id) cancelEdit();
  }

  // ---- Sending --------------------------------------------------------------------------------
  function cmid() {
    return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  }

  // A `send` waits in the outbox until its `sent`; after a reconnect it is sent again with the
  // same cmid, which the node answers without storing it twice.
  async function sendMessage(frame) {
    S.outbox.set(frame.cmid, frame);
    showPending(frame);
    try {
      await request(frame);
      S.outbox.delete(frame.cmid);
      removePending(frame.cmid);
    } catch (e) {
      if (e.code === 'offline' || e.code === 'timeout') return; // kept for the reconnect
      S.outbox.delete(frame.cmid);
      removePending(frame.cmid);
      showRoomError(`Not sent: ${describe(e)}`);
    }
  }

  async function flushOutbox() {
    for (const frame of [...S.outbox.values()]) {
      if (!S.ready) return;
      await sendMessage(frame);
    }
  }

  function showPending(frame) {
    if (!S.room || frame.room !== S.room.id) return;
    if (document.querySelector(`#messages li[data-pending="${CSS.escape(frame.cmid)}"]`)) return;
    const label = frame.kind === 'text' ? frame.text : `[${frame.kind}]`;
    $('#messages').append(
      h('li', { class: 'msg mine pending', 'data-pending': frame.cmid },
        h('div', { class: 'bubble' }, h('span', { class: 'text', text: label })),
        h('div', { class: 'meta' }, h('span', { text: 'sending…' }))),
    );
    scrollToBottom();
  }
  function removePending(c) {
    const el = document.querySelector(`#messages li[data-pending="${CSS.escape(c)}"]`);
    if (el) el.remove();
  }

  async function onComposerSubmit(ev) {
    ev.preventDefault();
    const room = S.room;
    const box = $('#composer-text');
    const text = box.value;
    if (!room || !text.trim()) return;
    if (new TextEncoder().encode(text).length > S.limits.text) {
      showRoomError(`That message is too long (at most ${S.limits.text} bytes).`);
      return;
    }
    showRoomError('');
    if (room.editing) {
      const target = room.editing;
      try {
        await request({ t: 'edit', group: S.group, room: room.id, id: target.id, text });
        cancelEdit();
        box.value = '';
      } catch (e) {
        showRoomError(`Not edited: ${describe(e)}`);
      }
      return;
    }
    box.value = '';
    await sendMessage({ t: 'send', group: S.group, room: room.id, kind: 'text', text, cmid: cmid() });
  }

  function startEdit(m) {
    const room = S.room;
    if (!room) return;
    room.editing = m;
    $('#editing').hidden = false;
    const box = $('#composer-text');
    box.value = m.text || '';
    box.focus();
  }
  function cancelEdit() {
    if (S.room) S.room.editing = null;
    $('#editing').hidden = true;
  }

  async function deleteMessage(m) {
    if (!S.room || !window.confirm('Delete this message for everyone?')) return;
    try {
      await request({ t: 'delete', group: S.group, room: S.room.id, id: m.id });
    } catch (e) {
      showRoomError(`Not deleted: ${describe(e)}`);
    }
  }

  async function onFileChosen(ev) {
    const input = ev.target;
    const file = input.files && input.files[0];
    input.value = '';
    const room = S.room;
    if (!file || !room) return;
    showRoomError('');
    const type = file.type || 'application/octet-stream';
    const kind = type.startsWith('image/') ? 'image' : type.startsWith('video/') ? 'video' : 'file';
    const status = $('#typing');
    status.textContent = `Uploading ${file.name}…`;
    try {
      const media = await rest('POST', `${groupPath()}/${encodeURIComponent(room.id)}/media?name=${encodeURIComponent(file.name)}`,
        undefined, { raw: file, contentType: type });
      status.textContent = '';
      await sendMessage({ t: 'send', group: S.group, room: room.id, kind, media: media.id, cmid: cmid() });
    } catch (e) {
      status.textContent = '';
      showRoomError(`Upload failed: ${describe(e)}`);
    }
  }

  function onComposerInput() {
    const room = S.room;
    if (!room || room.editing) return;
    const now = Date.now();
    if (now - S.lastTypingSent > 2000) {
      S.lastTypingSent = now;
      send({ t: 'typing', group: S.group, room: room.id });
    }
  }

  // ---- Rooms: create and join -----------------------------------------------------------------
  async function onNewRoom(ev) {
    ev.preventDefault();
    const members = $('#new-members').value.split(',').map((s) => s.trim()).filter(Boolean);
    const body = { title: $('#new-title').value.trim(), kind: $('#new-kind').value, members };
    const roomId = $('#new-id').value.trim();
    if (roomId) body.room = roomId;
    try {
      const created = await rest('POST', groupPath(), body);
      ev.target.reset();
      ev.target.closest('details').open = false;
      await loadRooms();
      await openRoom(created.room);
    } catch (e) {
      window.alert(`Could not create the chat: ${describe(e)}`);
    }
  }

  async function onJoin(ev) {
    ev.preventDefault();
    const roomId = $('#join-id').value.trim();
    const password = $('#join-password').value;
    try {
      await rest('POST', `${groupPath()}/${encodeURIComponent(roomId)}/join`, password ? { password } : {});
      ev.target.reset();
      ev.target.closest('details').open = false;
      await loadRooms();
      await openRoom(roomId);
    } catch (e) {
      window.alert(`Could not join: ${describe(e)}`);
    }
  }

  // ---- Sign-in ----------------------------------------------------------------------------------
  function start(token, group) {
    S.token = token;
    S.group = group;
    sessionStorage.setItem('chatnode.session', JSON.stringify({ token, group }));
    $('#signin').hidden = true;
    $('#app').hidden = false;
    $('#group-name').textContent = group;
    showView('list');
    connect();
  }

  function signOut(message) {
    sessionStorage.removeItem('chatnode.session');
    const ws = S.ws;
    S.token = null;
    S.ws = null;
    S.ready = false;
    S.room = null;
    S.outbox.clear();
    clearTimeout(S.reconnectTimer);
    clearInterval(S.pingTimer);
    if (ws) ws.close(1000);
    $('#app').hidden = true;
    $('#signin').hidden = false;
    const err = $('#signin-error');
    err.textContent = message || '';
    err.hidden = !message;
  }

  async function onDevLogin(ev) {
    ev.preventDefault();
    const user = $('#dev-user').value.trim();
    const group = $('#dev-group').value.trim();
    try {
      const res = await fetch('/v1/dev/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user }),
      });
      const data = await res.json();
      if (!res.ok) throw new ChatError(data.error.code, data.error.message);
      start(data.token, group);
    } catch (e) {
      const err = $('#signin-error');
      err.textContent = `Could not sign in: ${describe(e)}`;
      err.hidden = false;
    }
  }

  function onTokenLogin(ev) {
    ev.preventDefault();
    start($('#token-input').value.trim(), $('#token-group').value.trim());
  }

  // ---- Wiring -----------------------------------------------------------------------------------
  function init() {
    $('#dev-form').addEventListener('submit', onDevLogin);
    $('#token-form').addEventListener('submit', onTokenLogin);
    $('#signout').addEventListener('click', () => signOut());
    $('#composer').addEventListener('submit', onComposerSubmit);
    $('#composer-text').addEventListener('input', onComposerInput);
    $('#composer-text').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        $('#composer').requestSubmit();
      } else if (ev.key === 'Escape') {
        cancelEdit();
      }
    });
    $('#cancel-edit').addEventListener('click', () => {
      cancelEdit();
      $('#composer-text').value = '';
    });
    $('#file-input').addEventListener('change', onFileChosen);
    $('#new-room-form').addEventListener('submit', onNewRoom);
    $('#join-form').addEventListener('submit', onJoin);
    $('#back').addEventListener('click', () => showView('list'));
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && S.room) loadOlder(S.room);
    }, { root: $('#scroller'), rootMargin: '200px 0px 0px 0px' }).observe($('#top-sentinel'));
    window.addEventListener('online', () => {
      if (S.token && !S.ws) connect();
    });
    // A tab in the background is not reading: stop being present after a while, so messages
    // keep counting as unread and push reaches this user's phone; come back on return.
    document.addEventListener('visibilitychange', () => {
      clearTimeout(S.hiddenTimer);
      if (!S.room || !S.ready) return;
      if (document.visibilityState === 'hidden') {
        const room = S.room;
        S.hiddenTimer = setTimeout(() => {
          if (S.room === room) {
            room.away = true;
            send({ t: 'leave', group: S.group, room: room.id });
          }
        }, 10000);
      } else if (S.room.away) {
        S.room.away = false;
        enterRoom(S.room, true).catch(() => {});
      }
    });

    fetch('/v1/web/config')
      .then((r) => r.json())
      .then((c) => { $('#dev-form').hidden = !c.dev_login; })
      .catch(() => {});
    const saved = sessionStorage.getItem('chatnode.session');
    if (saved) {
      try {
        const { token, group } = JSON.parse(saved);
        if (token && group) start(token, group);
      } catch {
        sessionStorage.removeItem('chatnode.session');
      }
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
