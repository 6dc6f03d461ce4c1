"use strict";
// Follows one task's update stream and keeps its page current. Task data is
// user data: it is only ever written with textContent, never as markup.
(() => {
  const main = document.getElementById("task");
  if (main === null) return;
  const $ = (id) => document.getElementById(id);
  const statusEl = $("task-status");
  const reasonEl = $("task-reason");
  const resultEl = $("task-result");
  const nodesBody = $("nodes-body");
  const noNodes = $("no-nodes");
  const log = $("log");
  const abortButton = $("abort");
  const abortMessage = $("abort-message");
  const connection = $("connection");
  const logLimit = Number(main.dataset.logLimit) || 200;
  const types = ["taskStart", "nodeStart", "nodeUpdate", "nodeError", "nodeDefer",
                 "nodeEnd", "taskEnd", "taskError", "taskAborted"];
  const terminal = new Set(["taskEnd", "taskError", "taskAborted"]);
  // A node's state follows the client's fold (requence_task/_fold.py), in the
  // page's words: a failure always shows and stays; a node that ended or
  // failed changes no more; a task's end settles the nodes still active.
  const active = new Set(["started", "updated", "deferred"]);
  const settledBy = {taskEnd: "ended", taskError: "stopped", taskAborted: "aborted"};
  let settledAs = null;  // what a node still active became at the task's end
  let ended = main.dataset.ended === "true";
  let last = Number(main.dataset.after) || 0;
  const rows = new Map();
  for (const row of nodesBody.rows) rows.set(row.dataset.alias, row);
  // The template's graph (drawn by the server): each node's state, in the
  // graph's words (a node that started or sent data is "running").
  const graphNodes = new Map();
  for (const g of document.querySelectorAll("#graph-svg .graph-node")) {
    graphNodes.set(g.dataset.alias, g);
  }
  const graphWords = {started: "running", updated: "running"};
  const exitText = $("task-exit");

  const json = (value) => JSON.stringify(value === undefined ? null : value);
  const pretty = (value) => JSON.stringify(value === undefined ? null : value, null, 2);
  const compact = (value) => {
    const text = json(value);
    return text.length <= 200 ? text : text.slice(0, 199) + "\u2026";
  };
  const text = (value) => (typeof value === "string" ? value : null);

  function element(tag, className, content) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (content !== undefined && content !== null) el.textContent = content;
    return el;
  }

  function show(el, content) {
    el.textContent = content;
    el.hidden = false;
  }

  function setStatus(status) {
    statusEl.textContent = status;
    statusEl.className = "status status-" + status.toLowerCase().replace(/[^a-z0-9_]/g, "");
  }

  function nodeRow(alias) {
    let row = rows.get(alias);
    if (row !== undefined) return row;
    row = element("tr", "node");
    row.dataset.alias = alias;
    row.append(element("td", "node-alias", alias), element("td", "node-state"),
               element("td", "node-updates", "0"));
    setState(row, settledAs || "started");
    const detail = element("td", "node-detail");
    for (const [tag, className] of [["p", "node-reason"], ["pre", "node-data"],
                                    ["pre", "node-error"]]) {
      const part = element(tag, className);
      part.hidden = true;
      detail.append(part);
    }
    row.append(detail);
    nodesBody.append(row);
    rows.set(alias, row);
    noNodes.hidden = true;
    return row;
  }

  function setGraphState(g, state) {
    g.dataset.state = state;
    g.querySelector(".graph-state").textContent = state === "unreached" ? "not reached" : state;
  }

  function setState(row, state) {
    row.dataset.state = state;
    row.querySelector(".node-state").textContent = state;
    const g = graphNodes.get(row.dataset.alias);
    if (g !== undefined) setGraphState(g, graphWords[state] || state);
  }

  // A sub-task node's sub-task is made when the node starts; its id is not in
  // the updates, so read the links from this page as the server renders it
  // now (parsed, never run; the server escaped every value in it) and take
  // over the graph's links and the list of sub-tasks. Retried a few times: the
  // sub-task may be made a moment after its node's nodeStart.
  const svgNS = "http://www.w3.org/2000/svg";
  const wantedLinks = new Set();
  let fetching = false;
  let again = false;  // asked for while a fetch was under way

  function linkNode(alias, href) {
    const g = graphNodes.get(alias);
    if (g === undefined) return;
    let link = g.parentNode;
    if (!(link instanceof SVGAElement)) {
      link = document.createElementNS(svgNS, "a");
      link.setAttribute("class", "graph-subtask-link");
      link.dataset.alias = alias;
      g.replaceWith(link);
      link.append(g);
    }
    link.setAttribute("href", href);
  }

  async function refreshSubtasks(tries) {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    again = false;
    try {
      const response = await fetch(window.location.href, {cache: "no-store",
                                                          credentials: "same-origin"});
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const link of doc.querySelectorAll("#graph-svg a.graph-subtask-link")) {
        const href = link.getAttribute("href");
        if (href !== null && href.startsWith("/")) linkNode(link.dataset.alias, href);
        wantedLinks.delete(link.dataset.alias);
      }
      const list = doc.getElementById("subtasks");
      const box = $("subtasks-box");
      if (list !== null && box !== null) {
        $("subtasks").replaceWith(document.adoptNode(list));
        box.hidden = list.children.length === 0;
      }
    } catch (err) {
      // The next update of a sub-task node tries again.
    } finally {
      fetching = false;
    }
    if (again || (wantedLinks.size > 0 && tries > 1)) {
      window.setTimeout(() => refreshSubtasks(tries - 1), 300);
    }
  }

  function subtaskNodeMoved(alias, type) {
    const g = graphNodes.get(alias);
    if (g === undefined || g.dataset.type !== "reference") return;
    if (type === "nodeStart" && !(g.parentNode instanceof SVGAElement)) wantedLinks.add(alias);
    if (type === "nodeStart" || type === "nodeEnd" || type === "nodeError") refreshSubtasks(10);
  }

  function markExit(name) {
    for (const el of document.querySelectorAll("#graph-svg .graph-exit")) {
      if (el.dataset.exit === name) el.classList.add("taken");
    }
    if (exitText !== null) exitText.textContent = "Ended through the exit " + name + ".";
  }

  function moveOn(row, state) {
    if (active.has(row.dataset.state)) setState(row, state);
  }

  function settle(type) {
    if (settledAs !== null) return;  // the first end counts
    settledAs = settledBy[type];
    for (const row of rows.values()) moveOn(row, settledAs);
    for (const g of graphNodes.values()) {
      if (g.dataset.state === "waiting") setGraphState(g, "unreached");
    }
  }

  function summary(type, data) {
    switch (type) {
      case "taskStart": return "input " + compact(data.input);
      case "nodeUpdate":
        return (text(data.output) !== null ? "output " + data.output + ": " : "") +
               compact(data.data);
      case "taskEnd": return "result " + compact(data.result);
      case "nodeError": return text(data.error) || "";
      case "nodeDefer": case "taskError": case "taskAborted": return text(data.reason) || "";
      default: return "";
    }
  }

  function finish(status, reason, result, hasResult) {
    ended = true;
    setStatus(status);
    reasonEl.textContent = reason || "";
    resultEl.textContent = result;
    resultEl.classList.toggle("pending", !hasResult);
    abortButton.hidden = true;
  }

  function apply(type, data) {
    const node = data.node;
    const alias = node !== null && typeof node === "object" ? text(node.alias) : null;
    const row = alias !== null ? nodeRow(alias) : null;
    const status = statusEl.textContent;
    const settled = data.requireAck === true;
    if (terminal.has(type)) settle(type);
    if (alias !== null) subtaskNodeMoved(alias, type);
    switch (type) {
      case "taskStart":
        if (status === "IDLE") {
          setStatus("PENDING");
          reasonEl.textContent = "";  // an earlier finalize's rejection no longer applies
        }
        break;
      case "nodeStart":
        if (status === "IDLE" || status === "PENDING") setStatus("RUNNING");
        break;
      case "nodeUpdate":
        if (!row) break;
        if (row.dataset.state === "started") setState(row, "updated");
        row.querySelector(".node-updates").textContent =
          String(Number(row.querySelector(".node-updates").textContent) + 1);
        show(row.querySelector(".node-data"), pretty(data.data));
        break;
      case "nodeDefer":
        if (!row) break;
        moveOn(row, "deferred");
        show(row.querySelector(".node-reason"),
             "deferred: " + (text(data.reason) || "no reason given"));
        break;
      case "nodeError":
        if (!row) break;
        setState(row, "error");
        show(row.querySelector(".node-error"), text(data.error) || "");
        break;
      case "nodeEnd":
        if (row) moveOn(row, "ended");
        break;
      case "taskEnd":
        if (text(data.exit) !== null) markExit(data.exit);
        finish(settled ? "AWAITING_DELIVERY" : "SUCCESSFUL", "", pretty(data.result), true);
        break;
      case "taskError":
        finish(settled ? "AWAITING_DELIVERY" : "FAILED", text(data.reason),
               "No result: the task failed.", false);
        break;
      case "taskAborted":
        finish(settled ? "AWAITING_DELIVERY" : "STOPPED", text(data.reason),
               "No result: the task was aborted.", false);
        break;
    }
  }

  function addLog(position, type, data) {
    const item = element("li");
    const alias = data.node !== null && typeof data.node === "object" ? text(data.node.alias)
                                                                      : null;
    const stamp = text(data.timestamp) || "";
    item.append(element("span", "log-position", "#" + position), " ",
                element("time", "log-time", stamp.slice(11, 23)), " ",
                element("span", "log-type", type), " ");
    if (alias !== null) item.append(element("span", "log-node", alias), " ");
    const line = summary(type, data);
    if (line) item.append(element("code", "log-summary", line), " ");
    log.append(item);
    while (log.children.length > logLimit) log.firstElementChild.remove();
  }

  function setConnection(state, message) {
    connection.dataset.state = state;
    connection.textContent = message;
  }

  function follow() {
    if (ended) {
      setConnection("ended", "The task has ended.");
      return;
    }
    const source = new EventSource(main.dataset.eventsUrl);
    const receive = (event) => {
      const position = Number(event.lastEventId);
      if (Number.isFinite(position) && position <= last) return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (data === null || typeof data !== "object") return;
      if (Number.isFinite(position)) last = position;
      apply(event.type, data);
      addLog(event.lastEventId, event.type, data);
      if (terminal.has(event.type)) {
        source.close();
        setConnection("ended", "The task has ended.");
      }
    };
    for (const type of types) source.addEventListener(type, receive);
    source.onopen = () => setConnection("live", "Live: updates appear as they happen.");
    source.onerror = () => {
      if (ended) return;
      if (source.readyState === EventSource.CLOSED) {
        setConnection("closed", "Disconnected from the server; reload the page to retry.");
      } else {
        setConnection("retrying", "Connection lost; retrying\u2026");
      }
    };
  }

  abortButton.addEventListener("click", async () => {
    if (!window.confirm("Abort this task? An aborted task cannot be resumed.")) return;
    abortButton.disabled = true;
    abortMessage.textContent = "Aborting\u2026";
    try {
      const response = await fetch(main.dataset.abortUrl, {
        method: "POST",
        headers: {"X-Requence-Abort": "1"},
        credentials: "same-origin",
        cache: "no-store",
      });
      const body = await response.text();
      if (response.ok) {
        abortMessage.textContent = "Abort requested.";
      } else {
        abortMessage.textContent = "Abort refused (" + response.status + "): " + body;
        if (response.status !== 409 && !ended) abortButton.disabled = false;
      }
    } catch (err) {
      abortMessage.textContent = "Abort failed: " + err;
      if (!ended) abortButton.disabled = false;
    }
  });

  follow();
})();
