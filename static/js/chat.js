// The chat page's websocket client. Protocol: docs/websocket-protocol.md.
//
// Model output arrives as plain text while a reply streams and is only ever added with
// textContent / text nodes; the sanitized HTML the server renders replaces it when the reply ends.
(() => {
  "use strict";

  const body = document.body;
  const messagesEl = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-input");
  const sendButton = document.getElementById("send-button");
  const stopButton = document.getElementById("stop-button");
  const notices = document.getElementById("notices");
  const connectionStatus = document.getElementById("connection-status");
  const sidebarList = document.getElementById("conversation-list");
  if (!form || !messagesEl) return;

  const maxChars = parseInt(input.dataset.maxChars || "0", 10);
  const state = {
    conversation: body.dataset.conversation || null,
    // The reply being streamed: its message id and how many parts of it we hold (seq).
    streaming: null,
    // Sends the server has not confirmed yet, by client id: resent after a reconnect.
    pending: new Map(),
    socket: null,
    retryDelay: 500,
  };

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // --- rendering ---------------------------------------------------------------------------
  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html; // server-rendered partial; model output in it is sanitized
    return template.content.firstElementChild;
  }

  function nearBottom() {
    return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function upsertMessage(html) {
    const el = fragment(html);
    if (!el) return null;
    const stick = nearBottom();
    document.getElementById("empty-state")?.remove();
    const existing = messagesEl.querySelector(`[data-message-id="${el.dataset.messageId}"]`);
    if (existing) existing.replaceWith(el);
    else messagesEl.append(el);
    if (window.htmx) htmx.process(el);
    keepScrolled(stick);
    return el;
  }

  function streamTarget(messageId, field) {
    const article = messagesEl.querySelector(`[data-message-id="${messageId}"]`);
    if (!article) return null;
    if (field === "content") return article.querySelector("[data-stream-content]");
    let target = article.querySelector("[data-stream-reasoning]");
    if (!target) {
      const details = document.createElement("details");
      details.className = "reasoning";
      details.open = true;
      const summary = document.createElement("summary");
      summary.textContent = "Reasoning";
      target = document.createElement("div");
      target.className = "md reasoning-body";
      target.setAttribute("data-stream-reasoning", "");
      details.append(summary, target);
      article.querySelector(".message-meta").after(details);
    }
    return target;
  }

  function appendText(messageId, field, text, replace) {
    if (!text && !replace) return;
    const target = streamTarget(messageId, field);
    if (!target) return;
    const stick = nearBottom();
    if (replace) target.textContent = text;
    else target.append(document.createTextNode(text));
    keepScrolled(stick);
  }

  function showNotice(message, kind = "error") {
    const p = document.createElement("p");
    p.className = `notice notice--${kind}`;
    p.setAttribute("role", kind === "error" ? "alert" : "status");
    p.textContent = message;
    notices.replaceChildren(p);
  }

  function clearNotice() {
    notices.replaceChildren();
  }

  function setStreaming(streaming) {
    state.streaming = streaming;
    stopButton.hidden = !streaming;
    sendButton.hidden = !!streaming;
  }

  // --- frames from the server --------------------------------------------------------------
  const handlers = {
    conversation(frame) {
      state.conversation = frame.conversation;
      body.dataset.conversation = frame.conversation;
      if (location.pathname !== frame.url) history.pushState({}, "", frame.url);
      document.title = `${frame.title} · Team Chat`;
      const heading = document.getElementById("conversation-heading");
      if (heading) heading.textContent = frame.title;
      sidebarList.querySelector(`[data-conversation-id="${frame.conversation}"]`)?.remove();
      sidebarList.querySelectorAll(".is-current").forEach((el) => el.classList.remove("is-current"));
      const item = fragment(frame.sidebar_html);
      if (item) sidebarList.prepend(item);
    },
    message(frame) {
      if (frame.conversation !== state.conversation) return;
      upsertMessage(frame.html);
      if (frame.client_id && state.pending.has(frame.client_id)) {
        state.pending.delete(frame.client_id);
        // The server has the message: only now is the draft cleared.
        if (input.dataset.pendingId === frame.client_id) {
          input.value = "";
          delete input.dataset.pendingId;
          autoGrow();
        }
        sendButton.disabled = false;
        clearNotice();
      }
      if (frame.role === "assistant" && frame.status === "streaming") {
        setStreaming({ message: frame.message, seq: 0 });
      }
    },
    "reply.snapshot"(frame) {
      if (frame.conversation !== state.conversation) return;
      setStreaming({ message: frame.message, seq: frame.seq });
      appendText(frame.message, "content", frame.content, true);
      if (frame.reasoning) appendText(frame.message, "reasoning", frame.reasoning, true);
    },
    "reply.delta"(frame) {
      if (frame.conversation !== state.conversation) return;
      const current = state.streaming;
      const known = current && current.message === frame.message && current.seq !== null;
      if (known && frame.seq <= current.seq) return; // already have it
      if (!known || frame.from !== current.seq) {
        // A gap (a frame was lost, or we hold only the stored text): ask for what is missing,
        // once until an answer comes (or again, should the answer itself be lost).
        if (!current || current.message !== frame.message) setStreaming({ message: frame.message, seq: null });
        const now = Date.now();
        if (!state.streaming.askedAt || now - state.streaming.askedAt > 3000) {
          state.streaming.askedAt = now;
          send({ type: "subscribe", conversation: state.conversation, message: state.streaming.message, seq: state.streaming.seq });
        }
        return;
      }
      appendText(frame.message, "content", frame.content, false);
      appendText(frame.message, "reasoning", frame.reasoning, false);
      state.streaming.seq = frame.seq;
      state.streaming.askedAt = 0;
    },
    "reply.done"(frame) {
      if (frame.conversation !== state.conversation) return;
      upsertMessage(frame.html);
      if (!state.streaming || state.streaming.message === frame.message) setStreaming(null);
    },
    subscribed(frame) {
      if (frame.conversation === state.conversation && !frame.streaming) setStreaming(null);
    },
    error(frame) {
      if (frame.client_id) state.pending.delete(frame.client_id);
      if (frame.client_id && input.dataset.pendingId === frame.client_id) delete input.dataset.pendingId;
      sendButton.disabled = false;
      showNotice(frame.message, "error");
    },
  };

  // --- the socket --------------------------------------------------------------------------
  function send(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/chat/`);
    state.socket = socket;
    socket.addEventListener("open", () => {
      state.retryDelay = 500;
      connectionStatus.hidden = true;
      if (state.conversation) {
        const s = state.streaming;
        send({ type: "subscribe", conversation: state.conversation, message: s?.message, seq: s?.seq });
      }
      // Sends that may not have arrived: the client id makes a resend safe.
      for (const frame of state.pending.values()) send(frame);
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      handlers[frame.type]?.(frame);
    });
    socket.addEventListener("close", () => {
      if (state.socket !== socket) return;
      connectionStatus.hidden = false;
      setTimeout(connect, state.retryDelay);
      state.retryDelay = Math.min(state.retryDelay * 2, 10000);
    });
  }

  // --- composing ---------------------------------------------------------------------------
  function autoGrow() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  }

  function submit() {
    const content = input.value;
    if (!content.trim() || input.dataset.pendingId) return;
    if (maxChars && content.length > maxChars) {
      showNotice(
        `This message is ${content.length.toLocaleString()} characters long; the limit is ${maxChars.toLocaleString()}. Nothing was sent: shorten it and try again.`,
      );
      return;
    }
    const frame = { type: "send", conversation: state.conversation, content, client_id: newId() };
    state.pending.set(frame.client_id, frame);
    input.dataset.pendingId = frame.client_id;
    sendButton.disabled = true;
    if (!send(frame)) showNotice("Reconnecting… your message will be sent when the connection is back.", "info");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape" && state.streaming) {
      stopButton.click();
    }
  });
  input.addEventListener("input", autoGrow);
  stopButton.addEventListener("click", () => {
    if (state.conversation) send({ type: "stop", conversation: state.conversation });
  });
  window.addEventListener("popstate", () => location.reload());

  const streamingArticle = messagesEl.querySelector('[data-status="streaming"]');
  if (streamingArticle) setStreaming({ message: Number(streamingArticle.dataset.messageId), seq: null });
  messagesEl.scrollTop = messagesEl.scrollHeight;
  connect();
  input.focus();
})();
