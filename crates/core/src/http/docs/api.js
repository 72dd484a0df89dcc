// Renders this API's OpenAPI document (openapi.json, beside this page) as a readable page: every
// operation by tag with its parameters, body, answers and their schemas, then the shared schemas.
// Built with DOM nodes and textContent only (no HTML from the document is ever interpreted).
"use strict";

(function () {
  const content = document.getElementById("content");
  let doc = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // Descriptions are short Markdown: `code` spans become <code>, the rest stays text.
  function text(markdown) {
    const out = el("span");
    String(markdown || "").split(/(`[^`]*`)/).forEach((part) => {
      if (part.startsWith("`") && part.endsWith("`") && part.length > 1) out.append(el("code", {}, part.slice(1, -1)));
      else out.append(part);
    });
    return out;
  }

  function refName(ref) {
    return ref.split("/").pop();
  }

  function resolve(ref) {
    const parts = ref.replace(/^#\//, "").split("/");
    return parts.reduce((node, key) => (node ? node[key] : undefined), doc);
  }

  // A short type: `string (uuid)`, `integer`, `array of Event`, a link for a $ref.
  function typeOf(schema) {
    if (!schema) return el("span", { class: "muted" }, "any");
    if (schema.$ref) return el("a", { href: "#schema-" + refName(schema.$ref) }, refName(schema.$ref));
    let type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type;
    if (type && type.includes("array") && schema.items) {
      return el("span", {}, type.replace("array", "array of "), typeOf(schema.items));
    }
    if (!type && (schema.oneOf || schema.anyOf)) type = schema.oneOf ? "one of" : "any of";
    if (!type && schema.allOf) type = "all of";
    return el("span", {}, type || "any", schema.format ? ` (${schema.format})` : "");
  }

  function constraints(schema) {
    const parts = [];
    if (schema.enum) parts.push("one of: " + schema.enum.map((v) => JSON.stringify(v)).join(", "));
    for (const key of ["minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "default"]) {
      if (schema[key] !== undefined) parts.push(`${key}: ${JSON.stringify(schema[key])}`);
    }
    if (schema.additionalProperties === false) parts.push("no other properties");
    return parts.length ? el("span", { class: "muted" }, " — " + parts.join("; ")) : null;
  }

  // A schema as nested lists: properties (required ones marked), items, alternatives.
  function renderSchema(schema, depth) {
    const box = el("div", { class: "schema" });
    if (!schema) return box;
    if (schema.$ref) {
      box.append(el("div", {}, "see ", typeOf(schema)));
      return box;
    }
    const head = el("div", {}, typeOf(schema), constraints(schema));
    if (schema.description) head.append(" ", text(schema.description));
    box.append(head);
    if (depth > 6) return box;
    for (const key of ["oneOf", "anyOf", "allOf"]) {
      if (!schema[key]) continue;
      const list = el("ul");
      schema[key].forEach((item) => list.append(el("li", {}, renderSchema(item, depth + 1))));
      box.append(list);
    }
    if (schema.properties) {
      const required = new Set(schema.required || []);
      const table = el("table", {}, el("tr", {}, el("th", {}, "property"), el("th", {}, "schema")));
      for (const [name, prop] of Object.entries(schema.properties)) {
        table.append(el("tr", {},
          el("td", {}, el("code", {}, name), required.has(name) ? el("span", { class: "req", title: "required" }, " *") : null),
          el("td", {}, renderSchema(prop, depth + 1))));
      }
      box.append(table);
    }
    if (schema.items && !schema.items.$ref && (schema.items.properties || schema.items.oneOf)) {
      box.append(el("div", { class: "muted" }, "each item:"), renderSchema(schema.items, depth + 1));
    }
    if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
      box.append(el("div", { class: "muted" }, "other properties:"), renderSchema(schema.additionalProperties, depth + 1));
    }
    return box;
  }

  function renderContent(contentMap) {
    const box = el("div");
    for (const [type, media] of Object.entries(contentMap || {})) {
      box.append(el("div", {}, el("code", {}, type)), renderSchema(media.schema, 0));
    }
    return box;
  }

  function renderOperation(method, path, op) {
    const body = el("div", { class: "op-body" });
    if (op.description) body.append(el("p", {}, text(op.description)));
    body.append(el("p", { class: "muted" },
      op.security && op.security.length ? "Requires a bearer token (JWT)." : "No token needed."));
    const params = op.parameters || [];
    if (params.length) {
      const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "schema"), el("th", {}, "description")));
      for (const p of params.map((p) => (p.$ref ? resolve(p.$ref) : p))) {
        table.append(el("tr", {},
          el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "req", title: "required" }, " *") : null),
          el("td", {}, p.in), el("td", {}, typeOf(p.schema), p.schema ? constraints(p.schema) : null),
          el("td", {}, text(p.description))));
      }
      body.append(el("h4", {}, "Parameters"), table);
    }
    if (op.requestBody) {
      const rb = op.requestBody.$ref ? resolve(op.requestBody.$ref) : op.requestBody;
      body.append(el("h4", {}, "Body", rb.required ? "" : " (optional)"));
      if (rb.description) body.append(el("p", {}, text(rb.description)));
      body.append(renderContent(rb.content));
    }
    const table = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "answer")));
    for (const [status, ref] of Object.entries(op.responses || {})) {
      const response = ref.$ref ? resolve(ref.$ref) : ref;
      const cell = el("td", {}, text(response.description));
      if (response.headers) cell.append(el("div", { class: "muted" }, "headers: " + Object.keys(response.headers).join(", ")));
      cell.append(renderContent(response.content));
      table.append(el("tr", {}, el("td", {}, el("strong", {}, status)), cell));
    }
    body.append(el("h4", {}, "Answers"), table);
    const id = "op-" + method + "-" + path.replace(/[^A-Za-z0-9]+/g, "-");
    return el("details", { class: "op", id },
      el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()),
        el("span", { class: "path" }, path), op.summary ? el("span", { class: "summary" }, op.summary) : null),
      body);
  }

  function render() {
    document.title = doc.info.title;
    document.getElementById("title").textContent = doc.info.title;
    document.getElementById("version").textContent = `version ${doc.info.version} · OpenAPI ${doc.openapi}`;
    content.replaceChildren();
    if (doc.info.description) content.append(el("p", {}, text(doc.info.description)));
    const byTag = new Map();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of ["get", "post", "put", "patch", "delete"]) {
        const op = item[method];
        if (!op) continue;
        const tag = (op.tags && op.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(renderOperation(method, path, op));
      }
    }
    const tagInfo = new Map((doc.tags || []).map((t) => [t.name, t]));
    const order = [...(doc.tags || []).map((t) => t.name), ...byTag.keys()];
    for (const tag of [...new Set(order)]) {
      if (!byTag.has(tag)) continue;
      const section = el("section", { "aria-labelledby": "tag-" + tag }, el("h2", { id: "tag-" + tag }, tag));
      if (tagInfo.has(tag) && tagInfo.get(tag).description) section.append(el("p", {}, text(tagInfo.get(tag).description)));
      byTag.get(tag).forEach((op) => section.append(op));
      content.append(section);
    }
    const schemas = (doc.components && doc.components.schemas) || {};
    if (Object.keys(schemas).length) {
      const section = el("section", { "aria-labelledby": "schemas" }, el("h2", { id: "schemas" }, "Schemas"));
      for (const [name, schema] of Object.entries(schemas)) {
        section.append(el("h3", { id: "schema-" + name }, name), renderSchema(schema, 0));
      }
      content.append(section);
    }
  }

  fetch("openapi.json", { headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new Error(`openapi.json answered ${response.status}`);
      return response.json();
    })
    .then((json) => {
      doc = json;
      render();
    })
    .catch((error) => {
      content.replaceChildren(el("p", { role: "alert" }, "The document could not be loaded: " + error.message));
    });
})();
