// eventgate explorer: plain JavaScript, no dependencies, no build step. It only calls this service's
// public API (GET /stats, GET /stats/{topic}/fields, POST /stats/{topic}, POST /stats/{topic}/aggregate,
// GET /stats/{topic}/export) with the token pasted into the page, which is kept in memory only.
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
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    token: "",
    topic: "",
    fields: [],
    cursors: [null], // cursors[i] fetches page i; the last entry is the page shown
    nextCursor: null,
    filterCount: 0,
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
    for (const [i, event] of events.entries()) {
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
      pre.id = `payload-${i}`;
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
      body.append(row, detailRow);
    }
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
        let details = [];
        try {
          details = (await response.json()).errors || [];
        } catch (e) {
          details = [];
        }
        throw { title: `The server answered ${response.status}.`, details };
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

  // --- Wiring ---------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (local && local !== "UTC") $("chart-zone").append(option(local, `${local} (this browser)`));
    $("connect-form").addEventListener("submit", connect);
    $("topic").addEventListener("change", changeTopic);
    $("add-filter").addEventListener("click", addFilter);
    $("query-form").addEventListener("submit", runQuery);
    $("download").addEventListener("click", downloadCsv);
    $("next").addEventListener("click", nextPage);
    $("prev").addEventListener("click", previousPage);
    $("chart-unit").addEventListener("change", drawChart);
    $("chart-zone").addEventListener("change", drawChart);
    document.body.dataset.ready = "true";
  });
})();
