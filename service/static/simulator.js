// Nudge simulator page: play a debtor on SMS, WhatsApp or email.
// Plain ES2020, no framework. Message bodies are only ever set with textContent.
'use strict';

(() => {
  const API = '/simulator/api';
  const BOT_NAME = 'Nudge Collections';
  const MAX_BODY = 1600;
  const POLL_MS = 4000;          // fallback polling while the live stream is down
  const RECONNECT_MS = 3000;

  const CHANNEL_LABEL = { sms: 'SMS', whatsapp: 'WhatsApp', email: 'Email' };

  // --- state -----------------------------------------------------------------------
  const state = {
    debtors: [],
    debtor: null,            // the chosen debtor row
    channel: null,           // the chosen look: sms | whatsapp | email
    session: 0,              // bumped on every debtor/channel switch; stale work checks it
    source: null,            // EventSource
    reconnectTimer: null,
    pollTimer: null,
    lastId: null,            // last transcript stream id seen via the transcript API
    seen: new Set(),         // dedupe keys
    understood: new Map(),   // inbound message_id -> understood event
    delivery: new Map(),     // outbound message_id -> latest provider status (delivered, read...)
    messages: new Map(),     // message_id -> entry
    seq: 0,                  // insertion order, the tie-break for equal timestamps
    owner: 'bot',
    reason: null,
    ownerVersion: 0,         // bumped by live owner-changing events
    fillChain: Promise.resolve(),
    showUnderstanding: false,
    sending: false,
  };

  // --- elements --------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const els = {};

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // --- helpers ---------------------------------------------------------------------
  function compareIds(a, b) {
    const [am, as] = String(a).split('-').map(Number);
    const [bm, bs] = String(b).split('-').map(Number);
    if (am !== bm) return am < bm ? -1 : 1;
    if ((as || 0) !== (bs || 0)) return (as || 0) < (bs || 0) ? -1 : 1;
    return 0;
  }

  function entryKey(entry) {
    if (entry.kind === 'message') {
      return 'm:' + (entry.message_id || entry.id || JSON.stringify(entry));
    }
    return 'e:' + [entry.name, entry.message_id ?? '', entry.at ?? ''].join('|');
  }

  function channelLabel(channel) {
    return CHANNEL_LABEL[channel] || String(channel || '').toUpperCase();
  }

  function humanize(text) {
    return String(text ?? '').replace(/_/g, ' ');
  }

  function formatTime(at) {
    if (typeof at !== 'number' || !Number.isFinite(at)) return '';
    const when = new Date(at * 1000);
    const now = new Date();
    const time = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (when.toDateString() === now.toDateString()) return time;
    return when.toLocaleDateString([], { day: 'numeric', month: 'short' }) + ', ' + time;
  }

  function formatFullDate(at) {
    if (typeof at !== 'number' || !Number.isFinite(at)) return '';
    return new Date(at * 1000).toLocaleString([], {
      weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
      hour: '2-digit', minute: '2-digit',
    });
  }

  async function requestJSON(url, options = {}) {
    const response = await fetch(url, {
      headers: { Accept: 'application/json', ...(options.body ? { 'Content-Type': 'application/json' } : {}) },
      ...options,
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = (data && typeof data.error === 'string' && data.error)
        || `HTTP ${response.status} ${response.statusText}`.trim();
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data || {};
  }

  function debtorUrl(suffix) {
    return `${API}/debtors/${encodeURIComponent(state.debtor.id)}${suffix}`;
  }

  // --- status / errors -------------------------------------------------------------
  let statusTimer = null;
  function setStatus(text, { sticky = false, kind = 'info' } = {}) {
    els.status.textContent = text;
    els.status.dataset.kind = kind;
    clearTimeout(statusTimer);
    if (!sticky && text) statusTimer = setTimeout(() => { els.status.textContent = ''; }, 6000);
  }

  function showSendError(text) {
    els.sendErrorText.textContent = text;
    els.sendError.hidden = false;
  }

  function clearSendError() {
    els.sendError.hidden = true;
    els.sendErrorText.textContent = '';
  }

  function setLive(mode) {
    const labels = { live: 'live', connecting: 'connecting…', offline: 'offline', idle: 'offline' };
    els.live.dataset.state = mode;
    els.live.textContent = labels[mode] || mode;
    els.live.title = mode === 'live' ? 'Receiving updates live'
      : mode === 'connecting' ? 'Connecting to the live stream; polling meanwhile' : 'Not connected';
  }

  // --- SMS counter -----------------------------------------------------------------
  const GSM_BASIC = new Set(Array.from(
    '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?' +
    '¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà'));
  const GSM_EXTENDED = new Set(Array.from('^{}\\[~]|€\f'));

  function smsInfo(text) {
    let units = 0;
    let gsm = true;
    for (const ch of text) {
      if (GSM_BASIC.has(ch)) units += 1;
      else if (GSM_EXTENDED.has(ch)) units += 2;
      else { gsm = false; break; }
    }
    if (!gsm) {
      const length = text.length; // UTF-16 code units
      return { gsm: false, units: length, segments: length === 0 ? 0 : length <= 70 ? 1 : Math.ceil(length / 67) };
    }
    return { gsm: true, units, segments: units === 0 ? 0 : units <= 160 ? 1 : Math.ceil(units / 153) };
  }

  function updateCounter() {
    const text = els.composer.value;
    const chars = Array.from(text).length;
    if (state.channel === 'sms') {
      const info = smsInfo(text);
      let label = `${chars} characters`;
      if (info.segments > 0) label += ` · ${info.segments} SMS${info.gsm ? '' : ' (Unicode)'}`;
      els.counter.textContent = label;
      els.counter.title = info.gsm ? '160 characters per SMS, 153 per part when split'
        : 'Unicode: 70 characters per SMS, 67 per part when split';
    } else {
      els.counter.textContent = chars ? `${chars} / ${MAX_BODY}` : '';
    }
    els.counter.dataset.over = text.length > MAX_BODY ? 'true' : 'false';
    autoGrow();
    updateSendState();
  }

  function autoGrow() {
    const box = els.composer;
    box.style.height = 'auto';
    box.style.height = Math.min(box.scrollHeight + 2, 160) + 'px';
  }

  function updateSendState() {
    const ready = Boolean(state.debtor && state.channel);
    els.composer.disabled = !ready;
    els.sendButton.disabled = !ready || state.sending || !els.composer.value.trim()
      || els.composer.value.length > MAX_BODY;
    els.remindButton.disabled = !ready;
  }

  // --- look (channel skin) ---------------------------------------------------------
  function applyLook() {
    const look = state.channel || 'sms';
    els.stage.className = `stage look-${look}`;
    const subtitles = { sms: 'Text message', whatsapp: 'Business account', email: 'Inbox' };
    if (look === 'email') {
      els.deviceTitle.textContent = 'Inbox';
      els.deviceSubtitle.textContent = state.debtor ? `Mailbox of ${state.debtor.name}` : subtitles.email;
      els.composerLabel.textContent = 'Write a reply email as the debtor';
      els.composer.placeholder = state.debtor ? 'Write your reply…' : 'Choose a debtor first';
    } else {
      els.deviceTitle.textContent = BOT_NAME;
      els.deviceSubtitle.textContent = subtitles[look];
      els.composerLabel.textContent = `Reply as the debtor (${channelLabel(look)})`;
      els.composer.placeholder = state.debtor
        ? (look === 'whatsapp' ? 'Message' : 'Text message') : 'Choose a debtor first';
    }
    els.sendButton.textContent = look === 'email' ? 'Send reply' : 'Send';
    updateCounter();
  }

  function updateEmailHeader() {
    if (state.channel !== 'email') return;
    let subject = null;
    for (const entry of state.messages.values()) {
      if (entry.direction === 'out' && entry.subject) subject = entry.subject;
    }
    if (subject) els.deviceSubtitle.textContent = subject;
  }

  // --- rendering -------------------------------------------------------------------
  function nearBottom() {
    const box = els.conversation;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }

  function scrollToBottom() {
    requestAnimationFrame(() => { els.conversation.scrollTop = els.conversation.scrollHeight; });
  }

  // Insert keeping the list sorted by time (then arrival order); almost always an append.
  function insertSorted(node, at, seq) {
    node._sortAt = typeof at === 'number' ? at : Number.MAX_SAFE_INTEGER;
    node._sortSeq = seq;
    const list = els.conversation;
    let before = null;
    for (let child = list.lastElementChild; child; child = child.previousElementSibling) {
      if (child._sortAt > node._sortAt || (child._sortAt === node._sortAt && child._sortSeq > seq)) {
        before = child;
      } else {
        break;
      }
    }
    list.insertBefore(node, before);
  }

  function lastOutSubjectBefore(at) {
    let subject = null;
    for (const entry of state.messages.values()) {
      if (entry.direction === 'out' && entry.subject && (entry.at ?? 0) <= (at ?? Infinity)) subject = entry.subject;
    }
    return subject;
  }

  function renderMessage(entry) {
    const look = state.channel;
    const inbound = entry.direction === 'in';
    const item = el('li', `msg ${inbound ? 'msg-in' : 'msg-out'}`);
    item.dataset.messageId = entry.message_id || '';
    item.dataset.channel = entry.channel || '';
    if (entry.template) item.dataset.template = entry.template;
    const otherChannel = entry.channel && entry.channel !== look;
    if (otherChannel) item.classList.add('msg-other-channel');

    const bubble = el('div', 'bubble');

    if (look === 'email') {
      const head = el('div', 'mail-head');
      const avatar = el('span', 'mail-avatar', inbound ? initials(state.debtor?.name) : 'N');
      avatar.setAttribute('aria-hidden', 'true');
      const who = el('div', 'mail-who');
      const from = el('div', 'mail-from');
      from.append(el('span', 'mail-label', 'From: '),
        el('strong', null, inbound ? (state.debtor?.name || 'Debtor') : BOT_NAME));
      const to = el('div', 'mail-to');
      to.append(el('span', 'mail-label', 'To: '),
        document.createTextNode(inbound ? BOT_NAME : (state.debtor?.name || 'Debtor')));
      who.append(from, to);
      const date = el('time', 'mail-date', formatFullDate(entry.at));
      if (typeof entry.at === 'number') date.dateTime = new Date(entry.at * 1000).toISOString();
      head.append(avatar, who, date);
      let subjectText = entry.subject;
      if (!subjectText && inbound) {
        const previous = lastOutSubjectBefore(entry.at);
        subjectText = previous ? `Re: ${previous}` : null;
      }
      const subject = el('div', 'mail-subject');
      subject.append(el('span', 'mail-label', 'Subject: '),
        document.createTextNode(subjectText || '(no subject)'));
      bubble.append(head, subject);
    }

    const body = el('div', 'msg-body');
    body.textContent = entry.body ?? '';
    bubble.append(body);

    const meta = el('div', 'msg-meta');
    if (otherChannel) {
      const tag = el('span', 'channel-tag', `via ${channelLabel(entry.channel)}`);
      meta.append(tag);
    }
    if (look !== 'email') {
      const time = el('time', 'msg-time', formatTime(entry.at));
      if (typeof entry.at === 'number') time.dateTime = new Date(entry.at * 1000).toISOString();
      meta.append(time);
    }
    if (look === 'whatsapp' && inbound) {
      const ticks = el('span', 'ticks', '✓✓');
      meta.append(ticks);
    }
    if (!inbound) {
      // What the provider reported for the bot's message (Twilio's status callbacks).
      const status = el('span', 'delivery-status', '');
      meta.append(status);
      showDelivery(status, state.delivery.get(entry.message_id) || entry.status);
    }
    if (meta.childNodes.length) bubble.append(meta);

    const who = el('span', 'visually-hidden', inbound ? 'You wrote: ' : `${BOT_NAME} wrote: `);
    bubble.prepend(who);
    item.append(bubble);
    return item;
  }

  const DELIVERY_LABELS = {
    queued: 'queued', submitted: 'sending', sent: '✓ sent', delivered: '✓✓ delivered',
    read: '✓✓ read', undelivered: 'not delivered', failed: 'failed',
  };

  function showDelivery(node, status) {
    if (!node || !status) return;
    node.textContent = DELIVERY_LABELS[status] || status;
    node.dataset.status = status;
  }

  function updateDelivery(event) {
    const ranks = { queued: 0, attempting: 1, submitted: 2, sent: 3, delivered: 4, undelivered: 4, failed: 4, read: 5 };
    const known = state.delivery.get(event.message_id);
    if (known && (ranks[known] ?? -1) >= (ranks[event.status] ?? -1)) return;
    state.delivery.set(event.message_id, event.status);
    const item = findMessageNode(event.message_id);
    if (item) showDelivery(item.querySelector('.delivery-status'), event.status);
  }

  function initials(name) {
    const parts = String(name || '?').trim().split(/\s+/);
    return ((parts[0] || '?')[0] + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
  }

  function compactEntities(entities) {
    if (!entities || typeof entities !== 'object') return '';
    const parts = [];
    for (const [name, value] of Object.entries(entities)) {
      if (value === null || value === undefined || value === '') continue;
      let text;
      if (name === 'amount' && typeof value === 'object' && 'value' in value) {
        text = [value.value, value.currency].filter((v) => v !== null && v !== undefined && v !== '').join(' ');
      } else if (Array.isArray(value)) {
        text = value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(', ');
      } else if (typeof value === 'object') {
        text = Object.values(value).filter((v) => v !== null && v !== undefined).join(' ');
      } else {
        text = String(value);
      }
      parts.push(`${humanize(name)} ${text}`);
    }
    return parts.join(' · ');
  }

  function renderUnderstanding(event) {
    const chip = el('div', 'understanding');
    chip.dataset.intent = event.intent ?? '';
    const intent = el('span', 'u-intent', event.intent ?? 'unknown');
    chip.append(intent);
    if (typeof event.confidence === 'number') {
      chip.append(el('span', 'u-confidence', `${Math.round(event.confidence * 100)}%`));
    }
    const entities = compactEntities(event.entities);
    if (entities) chip.append(el('span', 'u-entities', entities));
    if (typeof event.source === 'string' && event.source.startsWith('prerule')) {
      chip.append(el('span', 'u-source', event.source));
    }
    if (event.urgent) chip.append(el('span', 'u-urgent', 'urgent'));
    chip.title = `Understood as ${event.intent} (${event.source || 'engine'})`;
    return chip;
  }

  // Add, refresh or remove the chip of one message node, according to the toggle.
  function refreshAnnotations(item) {
    const messageId = item.dataset.messageId;
    const inbound = item.classList.contains('msg-in');
    item.querySelectorAll(':scope > .understanding, :scope > .understanding-pending, :scope > .template-tag')
      .forEach((node) => node.remove());
    const event = inbound ? state.understood.get(messageId) : null;
    const ticks = item.querySelector('.ticks');
    if (ticks) {
      ticks.classList.toggle('read', Boolean(event));
      ticks.setAttribute('aria-label', event ? 'read' : 'delivered');
    }
    if (!state.showUnderstanding) return;
    if (inbound) {
      item.append(event ? renderUnderstanding(event) : el('div', 'understanding-pending', 'understanding…'));
    } else if (item.dataset.template) {
      item.append(el('div', 'template-tag', `template: ${item.dataset.template}`));
    }
  }

  function refreshAllAnnotations() {
    els.conversation.querySelectorAll('.msg').forEach(refreshAnnotations);
  }

  function eventText(event) {
    const channel = event.channel ? channelLabel(event.channel) : null;
    switch (event.name) {
      case 'handoff':
        return `Handed to an agent: ${humanize(event.reason || 'unspecified')}${event.urgent ? ' (urgent)' : ''}`;
      case 'claimed':
        return `${event.agent ? `Agent ${event.agent}` : 'An agent'} took over the conversation`;
      case 'handed_back':
        return `Handed back to the bot${event.agent ? ` by ${event.agent}` : ''}`;
      case 'opted_out':
        return `Opted out${channel ? ` of ${channel}` : ''}${event.via ? ` (${humanize(event.via)})` : ''}`;
      case 'opted_in':
        return `Opted in again${channel ? ` on ${channel}` : ''}`;
      case 'deferred':
        return `A ${humanize(event.template || 'message')} message waits until ${new Date(event.until).toLocaleString()}: ${humanize(event.reason || '')}`;
      case 'refused':
        return `A ${humanize(event.template || 'message')} message was not sent: ${humanize(event.reason || '')}`;
      case 'delivery':
        return `Not delivered${channel ? ` by ${channel}` : ''}${event.error_code ? ` (error ${event.error_code})` : ''}`;
      case 'fallback':
        return `Sent again by ${channelLabel(event.channel)} instead of ${channelLabel(event.from_channel)}: ${humanize(event.reason || '')}`;
      case 'undeliverable':
        return `Could not be delivered on any channel (${(event.tried || []).map(channelLabel).join(', ')})`;
      case 'invalid_number':
        return `The provider says this number cannot receive ${channel || 'messages'} (error ${event.error_code})`;
      case 'media_received':
        return `Attachment kept for the case (${event.count})`;
      case 'for_agent':
        return 'Message kept for the agent; the bot stays silent';
      case 'promise_made':
        return `Promise to pay${event.date ? ` by ${event.date}` : ''}`;
      case 'arrangement_accepted':
        return `Payment plan accepted${event.installments ? `: ${event.installments} instalments` : ''}`;
      case 'pay_in_full_chosen':
        return 'Chose to pay in full';
      default:
        return humanize(event.name || 'event');
    }
  }

  function renderEvent(event) {
    const item = el('li', 'system');
    item.dataset.event = event.name || '';
    if (event.message_id) item.dataset.messageId = event.message_id;
    if (event.name === 'handoff' || event.name === 'opted_out') item.classList.add('system-strong');
    if (event.urgent) item.classList.add('system-urgent');
    const line = el('span', 'system-text', eventText(event));
    const time = formatTime(event.at);
    if (time) line.title = time;
    item.append(line);
    return item;
  }

  // --- the model -------------------------------------------------------------------
  // Returns true if the entry was new.
  function addEntry(entry, { live = false } = {}) {
    if (!entry || typeof entry !== 'object') return false;
    const key = entryKey(entry);
    if (state.seen.has(key)) return false;
    state.seen.add(key);
    const seq = state.seq++;
    const stick = nearBottom();

    if (entry.kind === 'message') {
      state.messages.set(entry.message_id, entry);
      const item = renderMessage(entry);
      refreshAnnotations(item);
      insertSorted(item, entry.at, seq);
      if (entry.direction === 'out') updateEmailHeader();
    } else if (entry.kind === 'event') {
      if (entry.name === 'delivery') {
        updateDelivery(entry);
        // A failure is worth a line of its own; the other statuses show on the bubble.
        if (entry.status === 'undelivered' || entry.status === 'failed') {
          insertSorted(renderEvent(entry), entry.at, seq);
        }
      } else if (entry.name === 'understood') {
        if (entry.message_id) {
          state.understood.set(entry.message_id, entry);
          const item = findMessageNode(entry.message_id);
          if (item) refreshAnnotations(item);
        }
      } else {
        insertSorted(renderEvent(entry), entry.at, seq);
        applyOwnerEvent(entry, live);
      }
    } else {
      return false;
    }
    els.emptyNote.hidden = true;
    if (stick || entry.direction === 'in') scrollToBottom();
    return true;
  }

  function findMessageNode(messageId) {
    for (const node of els.conversation.querySelectorAll('.msg')) {
      if (node.dataset.messageId === messageId) return node;
    }
    return null;
  }

  function applyOwnerEvent(event, live) {
    let changed = true;
    if (event.name === 'handoff') setOwner('agent', event.reason || null);
    else if (event.name === 'claimed') setOwner('agent', state.reason);
    else if (event.name === 'handed_back') setOwner('bot', null);
    else changed = false;
    if (changed && live) state.ownerVersion += 1;
  }

  function setOwner(owner, reason) {
    state.owner = owner === 'agent' ? 'agent' : 'bot';
    state.reason = reason || null;
    const agent = state.owner === 'agent';
    els.agentBanner.hidden = !agent;
    els.agentReason.textContent = agent && state.reason ? `Reason: ${humanize(state.reason)}` : '';
    els.stage.dataset.owner = state.owner;
  }

  // --- loading: transcript (gap fill) and live stream ------------------------------
  function fillGaps(session) {
    // Serialised, so two fills never race over lastId.
    state.fillChain = state.fillChain.then(() => doFill(session)).catch(() => {});
    return state.fillChain;
  }

  async function doFill(session) {
    if (session !== state.session || !state.debtor) return;
    const versionAtStart = state.ownerVersion;
    const query = state.lastId ? `?after=${encodeURIComponent(state.lastId)}` : '';
    let data;
    try {
      data = await requestJSON(debtorUrl(`/transcript${query}`));
    } catch (error) {
      if (session === state.session) {
        setStatus(`Could not load the conversation: ${error.message}`, { kind: 'error' });
        if (!els.conversation.children.length) {
          els.emptyNote.hidden = false;
          els.emptyNote.textContent = 'Could not load the conversation; retrying…';
        }
      }
      return;
    }
    if (session !== state.session) return;
    for (const entry of Array.isArray(data.entries) ? data.entries : []) {
      addEntry(entry);
      if (entry.id && (!state.lastId || compareIds(entry.id, state.lastId) > 0)) state.lastId = entry.id;
    }
    // A live handoff that arrived while this request was in flight is newer than its answer.
    if (state.ownerVersion === versionAtStart && data.owner) setOwner(data.owner, data.reason);
    if (!els.conversation.children.length) {
      els.emptyNote.hidden = false;
      els.emptyNote.textContent = 'No messages yet. Press “Send first reminder” to start.';
    }
  }

  function connectStream(session) {
    if (session !== state.session || !state.debtor) return;
    closeStream();
    setLive('connecting');
    const source = new EventSource(debtorUrl('/stream'));
    state.source = source;
    source.onopen = () => {
      if (session !== state.session) return;
      setLive('live');
      fillGaps(session); // whatever happened while we were not listening
    };
    source.onmessage = (event) => {
      if (session !== state.session) return;
      let entry;
      try {
        entry = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      addEntry(entry, { live: true });
    };
    source.onerror = () => {
      if (session !== state.session) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. an HTTP error); try again ourselves.
        setLive('offline');
        clearTimeout(state.reconnectTimer);
        state.reconnectTimer = setTimeout(() => connectStream(session), RECONNECT_MS);
      } else {
        setLive('connecting'); // the browser reconnects by itself
      }
    };
  }

  function closeStream() {
    clearTimeout(state.reconnectTimer);
    if (state.source) {
      state.source.onopen = state.source.onmessage = state.source.onerror = null;
      state.source.close();
      state.source = null;
    }
  }

  function streamOpen() {
    return Boolean(state.source && state.source.readyState === EventSource.OPEN);
  }

  function startPolling(session) {
    clearInterval(state.pollTimer);
    state.pollTimer = setInterval(() => {
      if (session !== state.session) return;
      if (!streamOpen() && !document.hidden) fillGaps(session);
    }, POLL_MS);
  }

  function openConversation() {
    state.session += 1;
    const session = state.session;
    closeStream();
    clearInterval(state.pollTimer);
    state.lastId = null;
    state.seen = new Set();
    state.understood = new Map();
    state.messages = new Map();
    state.seq = 0;
    state.ownerVersion = 0;
    state.fillChain = Promise.resolve();
    els.conversation.replaceChildren();
    setOwner('bot', null);
    clearSendError();
    setStatus('');
    applyLook();
    if (!state.debtor) {
      setLive('idle');
      els.emptyNote.hidden = false;
      els.emptyNote.textContent = 'Choose a debtor on the left, then send the first reminder.';
      return;
    }
    els.emptyNote.hidden = false;
    els.emptyNote.textContent = 'Loading the conversation…';
    fillGaps(session).then(() => {
      if (session !== state.session) return;
      scrollToBottom();
      connectStream(session);
      startPolling(session);
    });
  }

  // --- pickers ---------------------------------------------------------------------
  function renderDebtorOptions() {
    const select = els.debtorSelect;
    select.replaceChildren();
    const placeholder = el('option', null, state.debtors.length ? 'Choose a debtor…' : 'No demo debtors found');
    placeholder.value = '';
    select.append(placeholder);
    for (const debtor of state.debtors) {
      const option = el('option', null,
        `${debtor.name} · ${String(debtor.language || '').toUpperCase()} · ${debtor.id} · prefers ${channelLabel(debtor.preferred_channel)}`);
      option.value = debtor.id;
      select.append(option);
    }
    select.disabled = !state.debtors.length;
  }

  function renderChannelOptions() {
    const select = els.channelSelect;
    select.replaceChildren();
    if (!state.debtor) {
      const option = el('option', null, 'Choose a debtor first');
      option.value = '';
      select.append(option);
      select.disabled = true;
      return;
    }
    for (const channel of state.debtor.channels || []) {
      const preferred = channel === state.debtor.preferred_channel;
      const option = el('option', null, `${channelLabel(channel)}${preferred ? ' (preferred)' : ''}`);
      option.value = channel;
      select.append(option);
    }
    select.value = state.channel || '';
    select.disabled = !(state.debtor.channels || []).length;
  }

  function renderDebtorCard() {
    const debtor = state.debtor;
    els.debtorCard.hidden = !debtor;
    els.cheatSheet.hidden = !debtor;
    if (!debtor) return;
    els.debtorName.textContent = debtor.name;
    els.debtorLang.textContent = String(debtor.language || '?').toUpperCase();
    els.debtorId.textContent = debtor.id;
    els.debtorCountry.textContent = debtor.country || '—';
    els.debtorPreferred.textContent = channelLabel(debtor.preferred_channel);
    els.cheatDob.textContent = debtor.date_of_birth || '—';
    els.cheatPostcode.textContent = debtor.postcode || '—';
    els.cheatReference.textContent = debtor.reference || '—';
    const dob = /^(\d{4})-(\d{2})-(\d{2})$/.exec(debtor.date_of_birth || '');
    els.cheatDobAlt.textContent = dob ? `or ${dob[3]}/${dob[2]}/${dob[1]}` : '';
    for (const button of [els.cheatDob, els.cheatPostcode, els.cheatReference]) {
      button.setAttribute('aria-label', `Insert ${button.textContent} into the reply`);
    }
  }

  function pickChannel(debtor, wanted) {
    const channels = debtor?.channels || [];
    if (wanted && channels.includes(wanted)) return wanted;
    if (channels.includes(debtor?.preferred_channel)) return debtor.preferred_channel;
    return channels[0] || null;
  }

  function selectDebtor(id, wantedChannel) {
    const debtor = state.debtors.find((d) => d.id === id) || null;
    state.debtor = debtor;
    state.channel = debtor ? pickChannel(debtor, wantedChannel) : null;
    els.debtorSelect.value = debtor ? debtor.id : '';
    renderDebtorCard();
    renderChannelOptions();
    saveHash();
    openConversation();
  }

  function selectChannel(channel) {
    if (!state.debtor || !(state.debtor.channels || []).includes(channel)) return;
    state.channel = channel;
    saveHash();
    openConversation();
  }

  function saveHash() {
    const params = new URLSearchParams();
    if (state.debtor) params.set('debtor', state.debtor.id);
    if (state.channel) params.set('channel', state.channel);
    const hash = params.toString();
    history.replaceState(null, '', hash ? `#${hash}` : location.pathname + location.search);
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    return { debtor: params.get('debtor'), channel: params.get('channel') };
  }

  async function loadDebtors() {
    els.debtorSelect.disabled = true;
    try {
      const data = await requestJSON(`${API}/debtors`);
      state.debtors = (Array.isArray(data.debtors) ? data.debtors : [])
        .slice().sort((a, b) => String(a.id).localeCompare(String(b.id)));
    } catch (error) {
      state.debtors = [];
      renderDebtorOptions();
      els.debtorSelect.firstElementChild.textContent = 'Could not load debtors';
      setStatus(`Could not load the demo debtors: ${error.message}. Reload the page to retry.`,
        { sticky: true, kind: 'error' });
      return;
    }
    renderDebtorOptions();
    const wanted = readHash();
    if (wanted.debtor && state.debtors.some((d) => d.id === wanted.debtor)) {
      selectDebtor(wanted.debtor, wanted.channel);
    } else {
      selectDebtor(null);
    }
  }

  // --- actions ---------------------------------------------------------------------
  async function sendReminder() {
    if (!state.debtor || !state.channel) return;
    const session = state.session;
    const channel = state.channel;
    els.remindButton.disabled = true;
    setStatus('Queuing the first reminder…', { sticky: true });
    try {
      await requestJSON(debtorUrl('/remind'), { method: 'POST', body: JSON.stringify({ channel }) });
      if (session === state.session) {
        setStatus(`First reminder queued on ${channelLabel(channel)}; it arrives in a moment.`);
        if (!streamOpen()) setTimeout(() => fillGaps(session), 1500);
      }
    } catch (error) {
      if (session === state.session) setStatus(`Reminder failed: ${error.message}`, { sticky: true, kind: 'error' });
    } finally {
      updateSendState();
    }
  }

  async function sendMessage() {
    if (!state.debtor || !state.channel || state.sending) return;
    const body = els.composer.value;
    if (!body.trim()) return;
    if (body.length > MAX_BODY) {
      showSendError(`The message is longer than ${MAX_BODY} characters.`);
      return;
    }
    const session = state.session;
    state.sending = true;
    updateSendState();
    clearSendError();
    try {
      await requestJSON(debtorUrl('/messages'), {
        method: 'POST', body: JSON.stringify({ channel: state.channel, body }),
      });
      if (session === state.session) {
        if (els.composer.value === body) els.composer.value = '';
        if (!streamOpen()) fillGaps(session);
      }
    } catch (error) {
      if (session === state.session) showSendError(error.message || 'The message could not be sent.');
    } finally {
      state.sending = false;
      updateCounter();
      if (!els.composer.disabled) els.composer.focus();
    }
  }

  function insertIntoComposer(text) {
    if (!state.debtor || !text || text === '—') return;
    const box = els.composer;
    const start = box.selectionStart ?? box.value.length;
    const end = box.selectionEnd ?? box.value.length;
    const before = box.value.slice(0, start);
    const spacer = before && !/\s$/.test(before) ? ' ' : '';
    box.value = before + spacer + text + box.value.slice(end);
    const caret = (before + spacer + text).length;
    box.focus();
    box.setSelectionRange(caret, caret);
    updateCounter();
  }

  // --- wiring ----------------------------------------------------------------------
  function init() {
    Object.assign(els, {
      stage: $('stage'),
      debtorSelect: $('debtor-select'),
      channelSelect: $('channel-select'),
      remindButton: $('remind-button'),
      toggle: $('understanding-toggle'),
      status: $('status'),
      debtorCard: $('debtor-card'),
      debtorName: $('debtor-name'),
      debtorLang: $('debtor-lang'),
      debtorId: $('debtor-id'),
      debtorCountry: $('debtor-country'),
      debtorPreferred: $('debtor-preferred'),
      cheatSheet: $('cheat-sheet'),
      cheatDob: $('cheat-dob'),
      cheatDobAlt: $('cheat-dob-alt'),
      cheatPostcode: $('cheat-postcode'),
      cheatReference: $('cheat-reference'),
      deviceTitle: $('device-title'),
      deviceSubtitle: $('device-subtitle'),
      live: $('live-indicator'),
      agentBanner: $('agent-banner'),
      agentReason: $('agent-reason'),
      conversation: $('conversation'),
      emptyNote: $('empty-note'),
      sendError: $('send-error'),
      sendErrorText: $('send-error-text'),
      sendErrorClose: $('send-error-close'),
      form: $('composer-form'),
      composer: $('composer'),
      composerLabel: $('composer-label'),
      counter: $('char-counter'),
      sendButton: $('send-button'),
      statusbarTime: $('statusbar-time'),
    });

    els.debtorSelect.addEventListener('change', () => selectDebtor(els.debtorSelect.value));
    els.channelSelect.addEventListener('change', () => selectChannel(els.channelSelect.value));
    els.remindButton.addEventListener('click', sendReminder);
    els.toggle.checked = false;
    els.toggle.addEventListener('change', () => {
      state.showUnderstanding = els.toggle.checked;
      els.stage.classList.toggle('show-understanding', state.showUnderstanding);
      refreshAllAnnotations();
    });
    els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      sendMessage();
    });
    els.composer.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        sendMessage();
      }
    });
    els.composer.addEventListener('input', updateCounter);
    els.sendErrorClose.addEventListener('click', clearSendError);
    document.querySelectorAll('.cheat-value').forEach((button) => {
      button.addEventListener('click', () => insertIntoComposer(button.textContent));
    });
    window.addEventListener('hashchange', () => {
      const wanted = readHash();
      if (wanted.debtor !== (state.debtor?.id ?? null)) selectDebtor(wanted.debtor, wanted.channel);
      else if (wanted.channel && wanted.channel !== state.channel) selectChannel(wanted.channel);
    });
    window.addEventListener('beforeunload', closeStream);

    const tick = () => {
      els.statusbarTime.textContent = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    };
    tick();
    setInterval(tick, 30000);

    applyLook();
    setLive('idle');
    loadDebtors();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
