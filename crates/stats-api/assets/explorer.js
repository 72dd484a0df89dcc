// eventgate explorer: plain JavaScript, no dependencies, no build step. It only calls this service's
// public API (GET /stats, GET /stats/{topic}/fields, POST /stats/{topic}, POST /stats/{topic}/aggregate,
// GET /stats/{topic}/export, GET /stats/{topic}/tail) with the token pasted into the page, which is kept in
// memory only.
(function () {
  "use strict";

  // Which filter operators apply to which field type (docs/API.md, "Filters").
  const OPERATORS = {
    eq: { label: "equals", suffix: "" },
    ne: { label: "differs from", suffix: "_ne" },
    contains: { label: "contains", suffix: "_contains" },
    in: { label: "is one of (a,b,c)", suffix: "_in" },
    gt: { label: "greater than", suffix: "_gt" },
    gte: { label: "at least", suffix: "_gte" },
    lt: { label: "less than", suffix: "_lt" },
    lte: { label: "at most", suffix: "_lte" },
    between: { label: "between (from,to)", suffix: "_between" },
    exists: { label: "has a value", suffix: "_exists" },
  };
  const OPERATORS_BY_TYPE = {
    string: ["eq", "ne", "contains", "in", "gt", "gte", "lt", "lte", "between", "exists"],
    integer: ["eq", "ne", "in", "gt", "gte", "lt", "lte", "between", "exists"],
    number: ["eq", "ne", "in", "gt", "gte", "lt", "lte", "between", "exists"],
    boolean: ["eq", "ne", "exists"],
    "date-time": ["gte", "lte", "gt", "lt", "between", "eq", "exists"],
    "epoch-ms": ["gte", "lte", "gt", "lt", "between", "eq", "exists"],
    uuid: ["eq", "ne", "in", "exists"],
    other: ["exists"],
  };
  const SUMMARY_FIELDS = 4;
  // Live mode keeps the newest rows only, so a busy topic cannot grow the page without bound.
  const LIVE_MAX_ROWS = 500;
  // A frame the server sends is at most one event (ingest's max_event_bytes, 256 KiB by default); more
  // than this without a frame's end is not a tail, and the stream is dropped rather than buffered.
  const LIVE_MAX_FRAME_CHARS = 4 * 1024 * 1024;
  const LIVE_MAX_BACKOFF_MS = 30000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    token: "",
    topic: "",
    fields: [],
    cursors: [null], // cursors[i] fetches page i; the last entry is the page shown
    nextCursor: null,
    filterCount: 0,
    live: null, // the running live tail: {controller, lastId, received, retryMs, failures}
  };

  const $ = (id) => document.getElementById(id);

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(error) {
    const box = $("error");
    box.replaceChildren();
    if (!error) {
      box.hidden = true;
      return;
    }
    const title = document.createElement("p");
    title.textContent = error.title;
    box.append(title);
    if (error.details && error.details.length) {
      const list = document.createElement("ul");
      for (const detail of error.details) {
        const item = document.createElement("li");
        item.textContent = detail.field ? `${detail.field}: ${detail.message}` : detail.message;
        list.append(item);
      }
      box.append(list);
    }
    box.hidden = false;
  }

  // Calls the API; resolves with the JSON answer or rejects with {title, details} from the error envelope.
  async function api(method, path, body) {
    const options = { method, headers: { Authorization: `Bearer ${state.token}` } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (e) {
      throw { title: `The server could not be reached (${e.message}).`, details: [] };
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (!response.ok) {
      const details = (answer && answer.errors) || [];
      throw { title: `The server answered ${response.status}.`, details };
    }
    return answer;
  }

  // The field-level errors of an error answer (its envelope's `errors`), none when it has no JSON body.
  async function errorDetails(response) {
    try {
      return (await response.json()).errors || [];
    } catch (e) {
      return [];
    }
  }

  function topicPath(suffix) {
    return `/stats/${encodeURIComponent(state.topic)}${suffix || ""}`;
  }

  function option(value, text, selected) {
    const element = document.createElement("option");
    element.value = value;
    element.textContent = text;
    if (selected) element.selected = true;
    return element;
  }

  // --- Connect and topics -------------------------------------------------------------------------

  async function connect(event) {
    event.preventDefault();
    state.token = $("token").value.trim();
    showError(null);
    setStatus("Loading topics…");
    try {
      const answer = await api("GET", "/stats");
      const select = $("topic");
      select.replaceChildren();
      for (const topic of answer.topics) select.append(option(topic.name, topic.name));
      if (!answer.topics.length) {
        setStatus("This token may not read any topic.");
        return;
      }
      $("query-panel").hidden = false;
      await loadFields();
      setStatus(`${answer.topics.length} topic(s) readable. Pick one, add filters, and run the query.`);
    } catch (error) {
      setStatus("");
      showError(error);
    }
  }

  async function loadFields() {
    state.topic = $("topic").value;
    const select = $("sort-field");
    const answer = await api("GET", topicPath("/fields"));
    state.fields = answer.fields;
    select.replaceChildren();
    for (const field of state.fields) {
      // Objects, arrays and fields inside arrays (`jobs[].status`: one value per element) have no order.
      if (field.type === "other" || field.name.includes("[]")) continue;
      select.append(option(field.name, field.name, field.name === "timestamp"));
    }
    $("filters").replaceChildren();
    $("query-form").dataset.fieldsLoaded = state.topic;
  }

  async function changeTopic() {
    stopLive();
    showError(null);
    try {
      await loadFields();
      $("results").hidden = true;
      $("chart-panel").hidden = true;
      setStatus(`Topic ${state.topic}: ${state.fields.length} fields.`);
    } catch (error) {
      showError(error);
    }
  }

  // --- Filters --------------------------------------------------------------------------------------

  function fieldType(name) {
    const field = state.fields.find((f) => f.name === name);
    return field ? field.type : "other";
  }

  function addFilter() {
    const n = ++state.filterCount;
    const row = document.createElement("div");
    row.className = "filter-row";
    row.dataset.filter = String(n);

    const fieldControl = labelled(`filter-field-${n}`, `Field`, document.createElement("select"));
    const field = fieldControl.querySelector("select");
    field.className = "filter-field";
    for (const f of state.fields) field.append(option(f.name, `${f.name} (${f.type})`));

    const opControl = labelled(`filter-op-${n}`, "Condition", document.createElement("select"));
    const op = opControl.querySelector("select");
    op.className = "filter-op";

    const value = document.createElement("input");
    value.type = "text";
    const valueControl = labelled(`filter-value-${n}`, "Value", value);
    value.className = "filter-value";

    const existsControl = labelled(`filter-exists-${n}`, "Value", document.createElement("select"));
    const exists = existsControl.querySelector("select");
    exists.className = "filter-exists";
    exists.append(option("true", "yes"), option("false", "no"));

    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove filter ${n}`);
    remove.addEventListener("click", () => {
      row.remove();
      $("add-filter").focus();
    });

    const refresh = () => {
      const type = fieldType(field.value);
      const previous = op.value;
      op.replaceChildren();
      for (const name of OPERATORS_BY_TYPE[type] || ["exists"]) {
        op.append(option(name, OPERATORS[name].label, name === previous));
      }
      const isExists = op.value === "exists";
      valueControl.hidden = isExists;
      existsControl.hidden = !isExists;
      value.placeholder = placeholderFor(type, op.value);
    };
    field.addEventListener("change", refresh);
    op.addEventListener("change", () => {
      const isExists = op.value === "exists";
      valueControl.hidden = isExists;
      existsControl.hidden = !isExists;
      value.placeholder = placeholderFor(fieldType(field.value), op.value);
    });
    refresh();

    row.append(fieldControl, opControl, valueControl, existsControl, remove);
    $("filters").append(row);
    field.focus();
  }

  function labelled(id, text, control) {
    const wrap = document.createElement("div");
    wrap.className = "control";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = text;
    control.id = id;
    wrap.append(label, control);
    return wrap;
  }

  function placeholderFor(type, op) {
    const one = {
      "date-time": "2025-01-31 or 2025-01-31T10:00:00Z",
      "epoch-ms": "2025-01-31 or 1738317600000",
      boolean: "true or false",
      integer: "42",
      number: "4.2",
    }[type] || "text";
    if (op === "in") return `${one}, …`;
    if (op === "between") return `from,to (leave a side empty to open it)`;
    return one;
  }

  // The typed JSON value of one operand, as the POST body wants it (docs/API.md, "Values").
  function operand(type, text) {
    const trimmed = text.trim();
    if (trimmed === "null") return null;
    if ((type === "integer" || type === "number") && trimmed !== "" && !Number.isNaN(Number(trimmed))) {
      return Number(trimmed);
    }
    if (type === "boolean" && (trimmed === "true" || trimmed === "false")) return trimmed === "true";
    if ((type === "date-time" || type === "epoch-ms") && /^-?\d+$/.test(trimmed)) return Number(trimmed);
    return type === "string" ? text : trimmed;
  }

  // The filters as [key, JSON value, query-string value] triples.
  function currentFilters() {
    const out = [];
    for (const row of $("filters").querySelectorAll(".filter-row")) {
      const name = row.querySelector(".filter-field").value;
      const op = row.querySelector(".filter-op").value;
      const type = fieldType(name);
      const key = name + OPERATORS[op].suffix;
      if (op === "exists") {
        const raw = row.querySelector(".filter-exists").value;
        out.push([key, raw === "true", raw]);
        continue;
      }
      const raw = row.querySelector(".filter-value").value;
      let value;
      if (op === "in") {
        value = raw.split(",").map((part) => operand(type, part));
      } else if (op === "between") {
        const parts = raw.split(",");
        const side = (i) => (parts[i] === undefined || parts[i].trim() === "" ? null : operand(type, parts[i]));
        value = [side(0), side(1)];
      } else {
        value = operand(type, raw);
      }
      out.push([key, value, raw]);
    }
    return out;
  }

  function filterObject() {
    const filter = {};
    for (const [key, value] of currentFilters()) filter[key] = value;
    return filter;
  }

  function sortList() {
    const field = $("sort-field").value || "timestamp";
    return [$("sort-order").value === "desc" ? `-${field}` : field];
  }

  // --- Query and pages ------------------------------------------------------------------------------

  async function runQuery(event) {
    if (event) event.preventDefault();
    stopLive();
    state.cursors = [null];
    await Promise.all([loadPage(), drawChart()]);
  }

  async function loadPage() {
    showError(null);
    const limit = Number($("page-size").value);
    const body = { filter: filterObject(), sort: sortList(), limit };
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) body.cursor = cursor;
    setStatus("Loading events…");
    try {
      const answer = await api("POST", topicPath(), body);
      renderEvents(answer.data);
      state.nextCursor = answer.pagination.has_more ? answer.pagination.cursor : null;
      const page = state.cursors.length;
      const first = (page - 1) * limit + 1;
      const shown = answer.data.length
        ? `events ${first}–${first + answer.data.length - 1}${state.nextCursor ? ", more follow" : ""}`
        : "no events match";
      $("events-caption").textContent = `${state.topic}: page ${page}, ${shown}.`;
      $("page-info").textContent = `Page ${page}`;
      $("prev").disabled = page === 1;
      $("next").disabled = !state.nextCursor;
      $("results").hidden = false;
      setStatus(`Page ${page} of ${state.topic}: ${answer.data.length} event(s).`);
    } catch (error) {
      setStatus("");
      showError(error);
    }
  }

  function summary(payload) {
    if (payload === null || typeof payload !== "object") return JSON.stringify(payload);
    const parts = [];
    for (const [key, value] of Object.entries(payload)) {
      if (value !== null && typeof value === "object") continue;
      parts.push(`${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`);
      if (parts.length === SUMMARY_FIELDS) break;
    }
    return parts.join(" · ");
  }

  function formatTime(text) {
    // 2025-01-15T10:30:00.123456Z → 2025-01-15 10:30:00.123456
    return text.replace("T", " ").replace(/Z$/, "");
  }

  function renderEvents(events) {
    const body = $("events").querySelector("tbody");
    body.replaceChildren();
    for (const [i, event] of events.entries()) body.append(...eventRows(event, `payload-${i}`));
  }

  // An event's row and its (hidden) payload row.
  function eventRows(event, payloadId) {
    const row = document.createElement("tr");
    row.dataset.id = event.id;
    const time = document.createElement("td");
    time.className = "time";
    const timeElement = document.createElement("time");
    timeElement.dateTime = event.timestamp;
    timeElement.textContent = formatTime(event.timestamp);
    time.append(timeElement);
    const producer = document.createElement("td");
    producer.className = "producer";
    producer.textContent = event.producer;
    const text = document.createElement("td");
    text.className = "summary";
    text.textContent = summary(event.payload);

    const detailRow = document.createElement("tr");
    detailRow.className = "payload-row";
    detailRow.hidden = true;
    const detailCell = document.createElement("td");
    detailCell.colSpan = 4;
    const pre = document.createElement("pre");
    pre.className = "payload";
    pre.id = payloadId;
    pre.textContent = JSON.stringify({ id: event.id, payload: event.payload }, null, 2);
    detailCell.append(pre);
    detailRow.append(detailCell);

    const toggleCell = document.createElement("td");
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "secondary payload-toggle";
    toggle.textContent = "Show payload";
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-controls", pre.id);
    toggle.addEventListener("click", () => {
      const open = detailRow.hidden;
      detailRow.hidden = !open;
      toggle.setAttribute("aria-expanded", String(open));
      toggle.textContent = open ? "Hide payload" : "Show payload";
    });
    toggleCell.append(toggle);

    row.append(time, producer, text, toggleCell);
    return [row, detailRow];
  }

  async function nextPage() {
    if (!state.nextCursor) return;
    state.cursors.push(state.nextCursor);
    await loadPage();
    $("results").focus();
  }

  async function previousPage() {
    if (state.cursors.length < 2) return;
    state.cursors.pop();
    await loadPage();
    $("results").focus();
  }

  // --- Chart ----------------------------------------------------------------------------------------

  async function drawChart() {
    const unit = $("chart-unit").value;
    const zone = $("chart-zone").value;
    const body = {
      filter: filterObject(),
      interval: { unit, time_zone: zone },
      metrics: ["count"],
      limit: 10000,
    };
    try {
      const answer = await api("POST", topicPath("/aggregate"), body);
      const buckets = answer.data.filter((row) => row.bucket !== null);
      renderChart(buckets, unit, zone, answer.total.metrics.count, answer.has_more);
    } catch (error) {
      showError(error);
    }
  }

  function svg(name, attributes, text) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function bucketLabel(iso, unit) {
    const text = formatTime(iso);
    if (unit === "hour") return text.slice(0, 16);
    if (unit === "month") return text.slice(0, 7);
    return text.slice(0, 10);
  }

  function renderChart(buckets, unit, zone, total, truncated) {
    const width = 760;
    const height = 260;
    const margin = { top: 16, right: 16, bottom: 44, left: 56 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const max = Math.max(1, ...buckets.map((b) => b.metrics.count));
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": "chart-title chart-desc",
      "data-buckets": buckets.length,
    });
    chart.append(
      svg("title", { id: "chart-title" }, `Events per ${unit} (${zone})`),
      svg("desc", { id: "chart-desc" },
        buckets.length
          ? `${buckets.length} buckets from ${bucketLabel(buckets[0].bucket, unit)} to ${bucketLabel(buckets[buckets.length - 1].bucket, unit)}, at most ${max} events in one.`
          : "No events match the filters."),
    );
    // Horizontal grid lines and y labels at 0, half and the maximum.
    for (const fraction of [0, 0.5, 1]) {
      const y = margin.top + plotHeight * (1 - fraction);
      chart.append(svg("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y, y2: y }));
      chart.append(svg("text", { x: margin.left - 8, y: y + 4, "text-anchor": "end" }, String(Math.round(max * fraction))));
    }
    chart.append(svg("line", { class: "axis", x1: margin.left, x2: width - margin.right, y1: margin.top + plotHeight, y2: margin.top + plotHeight }));
    const slot = plotWidth / Math.max(1, buckets.length);
    const barWidth = Math.max(1, slot * 0.8);
    buckets.forEach((bucket, i) => {
      const barHeight = (bucket.metrics.count / max) * plotHeight;
      const x = margin.left + i * slot + (slot - barWidth) / 2;
      const bar = svg("rect", {
        class: "bar",
        x: x.toFixed(1),
        y: (margin.top + plotHeight - barHeight).toFixed(1),
        width: barWidth.toFixed(1),
        height: barHeight.toFixed(1),
      });
      bar.append(svg("title", {}, `${bucketLabel(bucket.bucket, unit)}: ${bucket.metrics.count} events`));
      chart.append(bar);
    });
    // x labels: first, middle and last bucket.
    const labelled = new Set([0, Math.floor((buckets.length - 1) / 2), buckets.length - 1]);
    for (const i of labelled) {
      if (i < 0 || i >= buckets.length) continue;
      const x = margin.left + i * slot + slot / 2;
      chart.append(svg("text", { x, y: height - margin.bottom + 18, "text-anchor": "middle" }, bucketLabel(buckets[i].bucket, unit)));
    }
    $("chart").replaceChildren(chart);
    $("chart-caption").textContent =
      `${total} matching event(s) in all, by ${unit} (${zone})${truncated ? "; only the first 10,000 buckets are drawn" : ""}.`;

    const body = $("chart-table").querySelector("tbody");
    body.replaceChildren();
    for (const bucket of buckets) {
      const row = document.createElement("tr");
      const start = document.createElement("td");
      start.textContent = bucketLabel(bucket.bucket, unit);
      const count = document.createElement("td");
      count.textContent = String(bucket.metrics.count);
      row.append(start, count);
      body.append(row);
    }
    $("chart-panel").hidden = false;
  }

  // --- CSV download ---------------------------------------------------------------------------------

  async function downloadCsv() {
    showError(null);
    const params = new URLSearchParams({ format: "csv", sort: sortList().join(",") });
    for (const [key, , raw] of currentFilters()) params.append(key, raw);
    setStatus("Preparing the CSV…");
    try {
      const response = await fetch(`${topicPath("/export")}?${params}`, {
        headers: { Authorization: `Bearer ${state.token}` },
      });
      if (!response.ok) {
        throw { title: `The server answered ${response.status}.`, details: await errorDetails(response) };
      }
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = `${state.topic}.csv`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      setStatus(`Downloaded ${state.topic}.csv (${blob.size} bytes).`);
    } catch (error) {
      setStatus("");
      showError(error.title ? error : { title: String(error), details: [] });
    }
  }

  // --- Live tail -------------------------------------------------------------------------------------
  // GET /stats/{topic}/tail is Server-Sent Events, read with fetch() rather than EventSource because
  // EventSource cannot send the Authorization header; the frames are parsed here (the format is four
  // line prefixes, docs/API.md "Live tail"). After a dropped connection or a server-ended stream it
  // reconnects with Last-Event-ID, so no event is missed or shown twice.

  function toggleLive() {
    if ($("live").checked) startLive();
    else stopLive("Live stopped. Run the query to page through the events.");
  }

  function startLive() {
    stopLive();
    $("live").checked = true; // stopLive() unchecks it
    showError(null);
    const params = new URLSearchParams();
    for (const [key, , raw] of currentFilters()) params.append(key, raw);
    const live = {
      controller: null,
      lastId: null,
      received: 0,
      retryMs: 1000,
      failures: 0,
      path: `${topicPath("/tail")}${params.toString() ? `?${params}` : ""}`,
      topic: state.topic,
      since: new Date(),
    };
    state.live = live;
    $("events").querySelector("tbody").replaceChildren();
    $("pager").hidden = true;
    $("results").hidden = false;
    $("results").dataset.live = "connecting";
    liveCaption(live);
    setStatus(`Live: waiting for new events of ${live.topic}…`);
    readLive(live);
  }

  function stopLive(message) {
    const live = state.live;
    state.live = null;
    $("live").checked = false;
    $("pager").hidden = false;
    $("live-freshness").hidden = true;
    delete $("results").dataset.live;
    if (!live) return;
    if (live.controller) live.controller.abort();
    if (message) setStatus(message);
  }

  function liveCaption(live) {
    const since = live.since.toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
    $("events-caption").textContent = live.received
      ? `${live.topic}: live since ${since} UTC, ${live.received} new event(s), newest first.`
      : `${live.topic}: live since ${since} UTC; no new events yet.`;
  }

  async function readLive(live) {
    while (state.live === live) {
      const outcome = await readLiveOnce(live);
      if (state.live !== live) return;
      if (outcome.fatal) {
        stopLive();
        setStatus("");
        showError(outcome.fatal);
        return;
      }
      // Back off while the server keeps failing; a stream that delivered frames starts over at its retry.
      live.failures = outcome.progressed ? 0 : live.failures + 1;
      const wait = Math.min(LIVE_MAX_BACKOFF_MS, live.retryMs * 2 ** Math.min(live.failures, 5));
      $("results").dataset.live = "reconnecting";
      setStatus(`Live: ${outcome.reason}; reconnecting in ${Math.round(wait / 1000)} s…`);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  // One connection: resolves when it ends, with why and whether the caller should give up.
  async function readLiveOnce(live) {
    live.controller = new AbortController();
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
    if (live.lastId) headers["Last-Event-ID"] = live.lastId;
    let response;
    try {
      response = await fetch(live.path, { headers, signal: live.controller.signal, cache: "no-store" });
    } catch (e) {
      return { reason: "the server could not be reached", progressed: false };
    }
    if (!response.ok) {
      const details = await errorDetails(response);
      // 5xx and 429 pass; anything else (a bad filter, a token that expired, a position too old to
      // resume) would fail the same way again.
      if (response.status >= 500 || response.status === 429) {
        return { reason: `the server answered ${response.status}`, progressed: false };
      }
      return { fatal: { title: `The live view stopped: the server answered ${response.status}.`, details } };
    }
    $("results").dataset.live = "open";
    setStatus(`Live: showing new events of ${live.topic} as they are stored.`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let progressed = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return { reason: "the stream ended", progressed };
        buffer += value; // the server ends lines with "\n" only
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = parseFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (state.live !== live) return { reason: "stopped", progressed };
          const ended = liveFrame(live, frame);
          progressed = true;
          if (ended) return { reason: ended, progressed };
        }
        if (buffer.length > LIVE_MAX_FRAME_CHARS) {
          live.controller.abort();
          return { reason: "a frame was too large", progressed };
        }
      }
    } catch (e) {
      return { reason: "the connection dropped", progressed };
    }
  }

  function parseFrame(text) {
    const frame = { id: null, event: "message", data: [], retry: null };
    for (const line of text.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "id") frame.id = value;
      else if (name === "event") frame.event = value;
      else if (name === "data") frame.data.push(value);
      else if (name === "retry" && /^\d+$/.test(value)) frame.retry = Number(value);
    }
    return frame;
  }

  // Applies one frame; answers why the stream ends when the server ended it.
  function liveFrame(live, frame) {
    if (frame.retry !== null) live.retryMs = Math.max(250, frame.retry);
    // The position moves past a frame only once it is shown (a frame that fails to parse is read again).
    const data = frame.data.length ? JSON.parse(frame.data.join("\n")) : null;
    if (frame.id !== null) live.lastId = frame.id;
    if (data === null) return null;
    if (frame.event === "message") {
      addLiveEvent(live, data);
    } else if (frame.event === "freshness") {
      showFreshness(data);
    } else if (frame.event === "error") {
      return data.reason === "slow_consumer" ? "this page fell behind" : `the server ended the stream (${data.reason})`;
    }
    return null;
  }

  function addLiveEvent(live, event) {
    live.received += 1;
    const body = $("events").querySelector("tbody");
    const rows = eventRows(event, `payload-live-${live.received}`);
    rows[0].classList.add("live-new");
    body.prepend(...rows);
    // Each event is two rows (its summary and its payload).
    while (body.rows.length > 2 * LIVE_MAX_ROWS) body.lastElementChild.remove();
    liveCaption(live);
  }

  function showFreshness(freshness) {
    const line = $("live-freshness");
    if (!freshness || freshness.newest_event_at === null) {
      line.textContent = "Nothing of this topic is stored yet.";
    } else {
      const age = (freshness.age_ms / 1000).toFixed(1);
      line.textContent = `The newest stored event is ${age} s old; the writers stored it ${freshness.lag_ms} ms after it arrived.`;
    }
    line.hidden = false;
  }

  // --- Wiring ---------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (local && local !== "UTC") $("chart-zone").append(option(local, `${local} (this browser)`));
    $("connect-form").addEventListener("submit", connect);
    $("topic").addEventListener("change", changeTopic);
    $("add-filter").addEventListener("click", addFilter);
    $("query-form").addEventListener("submit", runQuery);
    $("download").addEventListener("click", downloadCsv);
    $("live").addEventListener("change", toggleLive);
    $("next").addEventListener("click", nextPage);
    $("prev").addEventListener("click", previousPage);
    $("chart-unit").addEventListener("change", drawChart);
    $("chart-zone").addEventListener("change", drawChart);
    document.body.dataset.ready = "true";
  });
})();
