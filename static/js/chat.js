// The chat page's websocket client. Protocol: docs/websocket-protocol.md.
//
// Model output arrives as plain text while a reply streams and is only ever added with
// textContent / text nodes; the sanitized HTML the server renders replaces it when the reply ends.
// Copy buttons read text from the DOM and never insert HTML; math is typeset by KaTeX from our
// own static files, from the escaped TeX the server leaves in .math-inline / .math-display.
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
  const estimate = document.getElementById("draft-estimate");
  if (!form || !messagesEl) return;

  const maxChars = parseInt(input.dataset.maxChars || "0", 10);
  const contextWindow = parseInt(input.dataset.contextWindow || "0", 10);
  const state = {
    conversation: body.dataset.conversation || null,
    // The reply being streamed: its message id and how many parts of it we hold (seq).
    streaming: null,
    // Frames the server has not confirmed yet, by client id: resent after a reconnect.
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

  function scrollToEnd() {
    messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function articles() {
    return messagesEl.querySelectorAll("article.message");
  }

  function lastArticle() {
    const all = articles();
    return all.length ? all[all.length - 1] : null;
  }

  function renderMath(scope) {
    if (!window.katex) return;
    for (const el of scope.querySelectorAll(".md .math-inline, .md .math-display")) {
      if (el.dataset.tex !== undefined) continue;
      const tex = el.textContent;
      el.dataset.tex = tex;
      try {
        // trust: false keeps \href, \url and \html* inert; the limits bound hostile input.
        katex.render(tex, el, {
          displayMode: el.classList.contains("math-display"),
          throwOnError: false,
          trust: false,
          strict: "ignore",
          maxSize: 50,
          maxExpand: 500,
        });
      } catch {
        el.textContent = tex; // shown as the TeX it is
      }
    }
  }

  function addCodeCopyButtons(scope) {
    for (const block of scope.querySelectorAll(".md .codeblock")) {
      if (block.querySelector(":scope > .copy-code")) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy-code";
      button.dataset.action = "copy-code";
      button.textContent = "Copy code";
      block.prepend(button);
    }
  }

  // What a page gets for every piece of server HTML it shows: math, copy buttons, local times.
  function enhance(scope) {
    if (window.htmx) htmx.process(scope);
    renderMath(scope);
    addCodeCopyButtons(scope);
    window.teamchatUI?.localizeTimes(scope);
  }

  function upsertMessage(html) {
    const el = fragment(html);
    if (!el) return null;
    const stick = nearBottom();
    document.getElementById("empty-state")?.remove();
    const existing = messagesEl.querySelector(`[data-message-id="${el.dataset.messageId}"]`);
    if (existing) existing.replaceWith(el);
    else messagesEl.append(el);
    enhance(el);
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

  function setTitle(title) {
    document.title = `${title} · Team Chat`;
    const heading = document.getElementById("conversation-heading");
    if (heading) heading.textContent = title;
    const rename = document.getElementById("rename-title");
    if (rename) rename.value = title;
  }

  // --- frames from the server --------------------------------------------------------------
  function confirmPending(clientId) {
    if (!clientId || !state.pending.has(clientId)) return false;
    state.pending.delete(clientId);
    // The server has the message: only now is the draft cleared.
    if (input.dataset.pendingId === clientId) {
      input.value = "";
      delete input.dataset.pendingId;
      autoGrow();
      updateEstimate();
    }
    sendButton.disabled = false;
    clearNotice();
    return true;
  }

  const handlers = {
    conversation(frame) {
      state.conversation = frame.conversation;
      body.dataset.conversation = frame.conversation;
      if (location.pathname !== frame.url) history.pushState({}, "", frame.url);
      const header = document.getElementById("conversation-title");
      const fresh = fragment(frame.header_html);
      if (header && fresh) {
        header.replaceWith(fresh);
        if (window.htmx) htmx.process(fresh);
      }
      setTitle(frame.title);
      sidebarList.querySelector(`[data-conversation-id="${frame.conversation}"]`)?.remove();
      sidebarList.querySelectorAll(".is-current").forEach((el) => el.classList.remove("is-current"));
      const item = fragment(frame.sidebar_html);
      if (item) {
        // After the pinned ones: the sidebar lists pinned conversations first.
        const pinned = sidebarList.querySelectorAll(".is-pinned");
        if (pinned.length) pinned[pinned.length - 1].after(item);
        else sidebarList.prepend(item);
      }
      // The settings panel was the new chat's; from now on it must save to this conversation.
      if (document.getElementById("settings-panel") && window.htmx) {
        htmx.ajax("GET", `/c/${frame.conversation}/settings/`, { target: "#settings-panel", swap: "outerHTML" });
      }
    },
    title(frame) {
      const link = sidebarList.querySelector(`[data-conversation-id="${frame.conversation}"] .sidebar-title`);
      if (link) link.textContent = frame.title;
      if (frame.conversation === state.conversation) setTitle(frame.title);
    },
    message(frame) {
      if (frame.conversation !== state.conversation) return;
      upsertMessage(frame.html);
      confirmPending(frame.client_id);
      if (frame.role === "assistant" && frame.status === "streaming") {
        setStreaming({ message: frame.message, seq: 0 });
      }
    },
    thread(frame) {
      if (frame.conversation !== state.conversation) return;
      const template = document.createElement("template");
      template.innerHTML = frame.html; // server-rendered partial; model output in it is sanitized
      messagesEl.replaceChildren(template.content);
      enhance(messagesEl);
      confirmPending(frame.client_id);
      const streaming = messagesEl.querySelector('article[data-status="streaming"]');
      // A fresh reply starts after this frame (its parts from 0); otherwise ask for what it has.
      if (streaming) setStreaming({ message: Number(streaming.dataset.messageId), seq: frame.fresh ? 0 : null });
      else setStreaming(null);
      if (streaming && !frame.fresh) {
        send({ type: "subscribe", conversation: state.conversation, message: state.streaming.message, seq: null });
      }
      scrollToEnd();
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
      // Replaced where it is shown, or added after the message it answers; a reply on a branch
      // this page does not show (versions were switched meanwhile) is left out.
      const last = lastArticle();
      const shown = messagesEl.querySelector(`[data-message-id="${frame.message}"]`);
      if (shown || !last || Number(last.dataset.messageId) === frame.parent) upsertMessage(frame.html);
      if (!state.streaming || state.streaming.message === frame.message) setStreaming(null);
    },
    "reply.status"(frame) {
      // The reply waits on something before its first token (summarizing earlier messages).
      if (frame.conversation !== state.conversation) return;
      const article = messagesEl.querySelector(`[data-message-id="${frame.message}"]`);
      if (!article) return;
      let status = article.querySelector("[data-reply-status]");
      if (!frame.text) {
        status?.remove();
        return;
      }
      if (!status) {
        status = document.createElement("p");
        status.className = "message-status";
        status.setAttribute("data-reply-status", "");
        status.setAttribute("role", "status");
        article.querySelector(".message-meta").after(status);
      }
      status.textContent = frame.text;
    },
    context(frame) {
      // Where the model's view of the conversation begins: one divider, above message `before`.
      if (frame.conversation !== state.conversation) return;
      messagesEl.querySelector(`[data-message-id="${frame.message}"] [data-reply-status]`)?.remove();
      document.getElementById("context-divider")?.remove();
      if (!frame.html || frame.before == null) return;
      const before = messagesEl.querySelector(`[data-message-id="${frame.before}"]`);
      const divider = fragment(frame.html); // server-rendered partial; the summary is sanitized
      if (!before || !divider) return;
      const stick = nearBottom();
      before.before(divider);
      enhance(divider);
      keepScrolled(stick);
    },
    subscribed(frame) {
      if (frame.conversation === state.conversation && !frame.streaming) setStreaming(null);
    },
    error(frame) {
      if (frame.client_id) state.pending.delete(frame.client_id);
      if (frame.client_id && input.dataset.pendingId === frame.client_id) delete input.dataset.pendingId;
      sendButton.disabled = false;
      const editor = frame.client_id && messagesEl.querySelector(`.edit-form[data-pending-id="${frame.client_id}"]`);
      if (editor) {
        // The edit was refused: the editor stays open with the text, to fix and resend.
        delete editor.dataset.pendingId;
        editor.querySelector("button[type=submit]").disabled = false;
      }
      showNotice(frame.message, "error");
      if (frame.code === "model_unavailable") {
        const details = document.querySelector("#settings-panel details");
        if (details) details.open = true;
      }
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

  // A frame that must arrive once: kept until the server answers for its client id.
  function sendOnce(frame) {
    // Every frame that starts a reply (send, edit, regenerate, continue) is charged to the
    // team picked in the composer, when the user is in several.
    const teamSelect = document.getElementById("team-select");
    if (teamSelect) frame.team = teamSelect.value;
    state.pending.set(frame.client_id, frame);
    if (!send(frame)) showNotice("Reconnecting… this will be sent when the connection is back.", "info");
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
    socket.addEventListener("close", (event) => {
      if (state.socket !== socket) return;
      if (event.code === 4403) {
        // The account was deactivated: reconnecting would only be refused.
        connectionStatus.hidden = true;
        setStreaming(null);
        sendButton.disabled = true;
        showNotice("Your account has been deactivated. Your draft is still in the box.");
        return;
      }
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

  // About four characters per token for English text: a cheap guide, hence "≈".
  function updateEstimate() {
    if (!estimate) return;
    const tokens = Math.ceil(input.value.length / 4);
    const windowText = contextWindow ? ` / ${contextWindow.toLocaleString()}` : "";
    estimate.textContent = `≈ ${tokens.toLocaleString()}${windowText} tokens`;
    estimate.classList.toggle("is-over", contextWindow > 0 && tokens > contextWindow);
  }

  function tooLong(content) {
    if (maxChars && content.length > maxChars) {
      showNotice(
        `This message is ${content.length.toLocaleString()} characters long; the limit is ${maxChars.toLocaleString()}. Nothing was sent: shorten it and try again.`,
      );
      return true;
    }
    return false;
  }

  function submit() {
    const content = input.value;
    if (!content.trim() || input.dataset.pendingId) return;
    if (tooLong(content)) return;
    const frame = { type: "send", conversation: state.conversation, content, client_id: newId() };
    // The reply follows what this page shows, even if another page switched versions since.
    const last = lastArticle();
    if (state.conversation && last) frame.parent = Number(last.dataset.messageId);
    input.dataset.pendingId = frame.client_id;
    sendButton.disabled = true;
    sendOnce(frame);
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
    } else if (event.key === "ArrowUp" && input.value === "" && !event.isComposing) {
      const mine = messagesEl.querySelectorAll("article.message--user");
      if (mine.length) {
        event.preventDefault();
        startEdit(mine[mine.length - 1]);
      }
    }
  });
  input.addEventListener("input", () => {
    autoGrow();
    updateEstimate();
  });
  stopButton.addEventListener("click", () => {
    if (state.conversation) send({ type: "stop", conversation: state.conversation });
  });
  window.addEventListener("popstate", () => location.reload());

  // --- actions on messages -----------------------------------------------------------------
  // The text of a message as the page shows it, read from the DOM (never HTML): line breaks
  // where the page breaks lines, list items as "- ", math as its TeX between dollars. For a
  // user's message this is exactly what they wrote (its body is text and <br>).
  const BLOCK = /^(P|DIV|PRE|H[1-6]|BLOCKQUOTE|UL|OL|LI|TABLE|THEAD|TBODY|TR|HR|DETAILS)$/;
  function textOf(root) {
    let out = "";
    const newline = () => {
      if (out && !out.endsWith("\n")) out += "\n";
    };
    const walk = (node) => {
      if (node.nodeType === Node.TEXT_NODE) {
        out += node.nodeValue;
        return;
      }
      if (node.nodeType !== Node.ELEMENT_NODE || node.matches(".copy-code, .katex-mathml")) return;
      if (node.dataset.tex !== undefined) {
        const display = node.classList.contains("math-display");
        out += display ? `$$${node.dataset.tex}$$` : `$${node.dataset.tex}$`;
        return;
      }
      if (node.tagName === "BR") {
        out += "\n";
        return;
      }
      const block = BLOCK.test(node.tagName);
      if (block) newline();
      if (node.tagName === "LI") out += "- ";
      for (const child of node.childNodes) walk(child);
      if (node.tagName === "TD" || node.tagName === "TH") out += "\t";
      if (block) newline();
      if (/^(P|PRE|H[1-6]|BLOCKQUOTE|TABLE)$/.test(node.tagName)) out += "\n";
    };
    for (const child of root.childNodes) walk(child);
    // A user's text is given back exactly; rendered Markdown loses its surplus blank lines.
    return root.classList.contains("plain") ? out : out.replace(/\n{3,}/g, "\n\n").trim();
  }

  function sourceOf(article) {
    const bodyEl = article.querySelector(".message-body");
    return bodyEl ? textOf(bodyEl) : "";
  }

  async function copyText(text, button) {
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch {
      // No clipboard API (an http:// address other than localhost): the old way.
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.append(area);
      area.select();
      try {
        copied = document.execCommand("copy");
      } catch {
        copied = false;
      }
      area.remove();
    }
    const label = button.firstChild;
    const before = label.textContent;
    label.textContent = copied ? "Copied" : "Copy failed";
    setTimeout(() => {
      label.textContent = before;
    }, 1500);
  }

  function startEdit(article) {
    if (article.querySelector(".edit-form")) {
      article.querySelector(".edit-form textarea").focus();
      return;
    }
    const bodyEl = article.querySelector(".message-body");
    const actions = article.querySelector(".message-actions");
    const editor = document.createElement("form");
    editor.className = "edit-form";
    const id = `edit-${article.dataset.messageId}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.className = "visually-hidden";
    label.textContent = "Edit message";
    const area = document.createElement("textarea");
    area.id = id;
    area.value = sourceOf(article);
    const buttons = document.createElement("div");
    buttons.className = "edit-buttons";
    const save = document.createElement("button");
    save.type = "submit";
    save.textContent = "Save and send";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    buttons.append(save, cancel);
    editor.append(label, area, buttons);
    bodyEl.hidden = true;
    if (actions) actions.hidden = true;
    bodyEl.after(editor);

    const grow = () => {
      area.style.height = "auto";
      area.style.height = `${Math.min(area.scrollHeight, 320)}px`;
    };
    const close = () => {
      editor.remove();
      bodyEl.hidden = false;
      if (actions) actions.hidden = false;
      input.focus();
    };
    const commit = () => {
      const content = area.value;
      if (!content.trim() || editor.dataset.pendingId || tooLong(content)) return;
      const frame = {
        type: "edit",
        conversation: state.conversation,
        message: Number(article.dataset.messageId),
        content,
        client_id: newId(),
      };
      editor.dataset.pendingId = frame.client_id;
      save.disabled = true;
      sendOnce(frame);
    };
    editor.addEventListener("submit", (event) => {
      event.preventDefault();
      commit();
    });
    cancel.addEventListener("click", close);
    area.addEventListener("input", grow);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        commit();
      } else if (event.key === "Escape") {
        event.preventDefault();
        close();
      }
    });
    grow();
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  messagesEl.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || !messagesEl.contains(button)) return;
    const article = button.closest("article.message");
    const action = button.dataset.action;
    if (action === "copy-code") {
      copyText(button.parentElement.querySelector("pre")?.textContent ?? "", button);
      return;
    }
    if (!article) return;
    const message = Number(article.dataset.messageId);
    if (action === "copy") {
      copyText(sourceOf(article), button);
    } else if (action === "edit") {
      startEdit(article);
    } else if (action === "switch" && button.dataset.target) {
      send({ type: "switch", conversation: state.conversation, message: Number(button.dataset.target) });
    } else if (action === "regenerate" || action === "continue") {
      sendOnce({ type: action, conversation: state.conversation, message, client_id: newId() });
    }
  });

  // --- start -------------------------------------------------------------------------------
  enhance(messagesEl);
  const streamingArticle = messagesEl.querySelector('[data-status="streaming"]');
  if (streamingArticle) setStreaming({ message: Number(streamingArticle.dataset.messageId), seq: null });
  // A link to one message (from search) opens at it; otherwise at the newest.
  const wanted = new URLSearchParams(location.search).get("message");
  const target = wanted && document.getElementById(`message-${wanted}`);
  if (target) {
    target.classList.add("is-target");
    target.scrollIntoView({ block: "center" });
  } else {
    scrollToEnd();
  }
  updateEstimate();
  connect();
  input.focus();
})();
