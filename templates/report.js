/* reportgen: the report's interactive layer (hand-written; no library, no network).
   Reads the data island #rg-data and turns every map figure (data-map) into a canvas one can
   hover, zoom, pan, colour and search; adds a search bar and layer tabs. Every string is put into
   the page as text (textContent, setAttribute), never as HTML. Runs by its hash under the page's
   Content-Security-Policy. With JavaScript off the page is complete without it. */
(function () {
  "use strict";
  var island = document.getElementById("rg-data");
  if (!island || !window.JSON || !document.createElement("canvas").getContext) return;
  var D;
  try { D = JSON.parse(island.textContent); } catch (e) { return; }

  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#9edae5", "#dbdb8d", "#393b79"];
  var GREY = "#c9ced6";

  function bytes(s) {
    var bin = atob(s), a = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
    return a.buffer;
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  document.documentElement.classList.add("rg-js");
  var P = D.ids.length;
  var labels = new Uint16Array(bytes(D.labels));
  var idsLower = D.ids.map(function (s) { return s.toLowerCase(); });
  var cardOf = {};
  D.cards.forEach(function (c) { cardOf[c[0]] = c[1]; });
  var flagsOf = [];
  for (var i = 0; i < P; i++) flagsOf.push([]);
  D.flags.forEach(function (f, k) {
    f.pts = new Uint32Array(bytes(f.points));
    for (var j = 0; j < f.pts.length; j++) flagsOf[f.pts[j]].push(k);
  });
  var layers = {};
  D.layers.forEach(function (l) {
    layers[l.anchor] = l;
    l.values.forEach(function (v) {
      v.arr = v.kind === "number" ? new Float32Array(bytes(v.data)) : new Uint16Array(bytes(v.data));
    });
  });
  D.metadata.forEach(function (m) { m.arr = new Uint16Array(bytes(m.codes)); });
  var order = new Uint32Array(P);  // a fixed shuffled drawing order: no class always on top
  for (i = 0; i < P; i++) order[i] = i;
  var seed = 12345;
  for (i = P - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    var r = seed % (i + 1), t = order[i]; order[i] = order[r]; order[r] = t;
  }

  // ---------------------------------------------------------------- thumbnails from the atlas
  var atlas = null, thumbs = {};
  function thumbURI(i) {
    if (!atlas || !D.atlas) return null;
    if (thumbs[i]) return thumbs[i];
    var tile = D.atlas.tile, c = el("canvas"), x = (i % D.atlas.cols) * tile, y = Math.floor(i / D.atlas.cols) * tile;
    c.width = c.height = 96;
    var g = c.getContext("2d");
    g.imageSmoothingEnabled = tile >= 48;
    g.drawImage(atlas, x, y, tile, tile, 0, 0, 96, 96);
    return (thumbs[i] = c.toDataURL("image/png"));
  }

  // ---------------------------------------------------------------- search (one for the page)
  var highlight = null;  // Uint8Array(P) of matches, or null
  var maps = [];
  function redrawAll() { maps.forEach(function (m) { m.draw(); }); }

  function matches(q) {
    q = q.trim().toLowerCase();
    if (!q) return null;
    var hit = new Uint8Array(P), classHit = {}, flagHit = {};
    D.classes.forEach(function (c, k) { if (c.name.toLowerCase().indexOf(q) >= 0) classHit[k] = 1; });
    D.flags.forEach(function (f, k) { if (f.name.toLowerCase().indexOf(q) >= 0) flagHit[k] = 1; });
    for (var i = 0; i < P; i++) {
      if (idsLower[i].indexOf(q) >= 0 || classHit[labels[i]]) { hit[i] = 1; continue; }
      var fl = flagsOf[i];
      for (var j = 0; j < fl.length; j++) if (flagHit[fl[j]]) { hit[i] = 1; break; }
    }
    return hit;
  }

  var bar = el("div", { "class": "rg-bar", role: "search" });
  var input = el("input", { type: "search", id: "rg-search", placeholder: "Search samples: file name, class or finding",
    "aria-label": "Search samples by file name, class or finding", autocomplete: "off" });
  var count = el("span", { "class": "m", "aria-live": "polite" });
  var results = el("ol", { "class": "rg-results" });
  bar.appendChild(input); bar.appendChild(count); bar.appendChild(results);
  var timer = 0;
  function setHighlight(hit, label) {
    highlight = hit;
    while (results.firstChild) results.removeChild(results.firstChild);
    if (!hit) { count.textContent = ""; redrawAll(); return; }
    var n = 0;
    for (var i = 0; i < P; i++) {
      if (!hit[i]) continue;
      if (n < 12) {
        var li = el("li"), a = el("a", { href: "#" + (cardOf[i] || "rg-dyn"), "data-point": String(i) },
          D.classes[labels[i]].name + " · " + D.ids[i]);
        li.appendChild(a); results.appendChild(li);
      }
      n++;
    }
    count.textContent = n + " of " + P + " interactive samples match" + (label ? " " + label : "") + (n > 12 ? " (first 12 listed; highlighted on every map)" : "");
    redrawAll();
  }
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { setHighlight(matches(input.value)); }, 120);
  });
  results.addEventListener("click", function (e) {
    var a = e.target.closest("a[data-point]");
    if (a && !cardOf[+a.getAttribute("data-point")]) { e.preventDefault(); openCard(+a.getAttribute("data-point")); }
  });

  // ---------------------------------------------------------------- cards
  var dyn = null;
  function layerValues(i) {
    var out = [];
    D.layers.forEach(function (l) {
      var parts = l.values.map(function (v) {
        var x = v.arr[i];
        if (v.kind === "class") return v.name + ": " + D.classes[x].name;
        if (v.kind === "slice") return v.name + ": " + (x > 0 ? "S" + x : "none");
        return v.name + ": " + x.toFixed(3);
      });
      if (parts.length) out.push([l.title, parts.join(" · "), "#" + l.anchor]);
    });
    return out;
  }
  function openCard(i) {
    if (cardOf[i]) { location.hash = cardOf[i]; return; }
    if (!dyn) {
      dyn = el("article", { "class": "card", id: "rg-dyn", "aria-label": "sample card" });
      (document.getElementById("samples") || document.body).appendChild(dyn);
    }
    while (dyn.firstChild) dyn.removeChild(dyn.firstChild);
    dyn.appendChild(el("a", { "class": "close", href: "#card-closed", "aria-label": "Close" }, "×"));
    var head = el("div", { "class": "card-head" }), img = thumbURI(i), info = el("div");
    if (img) head.appendChild(el("img", { "class": "big", src: img, alt: D.classes[labels[i]].name + " " + D.ids[i],
      width: "128", height: "128", style: "--c: " + D.classes[labels[i]].colour }));
    else head.appendChild(el("div"));
    info.appendChild(el("h3", null, D.ids[i]));
    info.appendChild(el("p", null, "label " + D.classes[labels[i]].name));
    var meta = D.metadata.map(function (m) { var c = m.arr[i]; return m.name + ": " + (c === 65535 ? "(other)" : m.values[c]); });
    if (meta.length) info.appendChild(el("p", { "class": "m" }, meta.join(" · ")));
    var ul = el("ul", { "class": "flags" });
    flagsOf[i].forEach(function (k) {
      var f = D.flags[k], li = el("li", f.finding ? null : { "class": "g" });
      li.appendChild(el("a", { href: f.href }, f.name));
      if (f.where) li.appendChild(el("span", { "class": "m" }, " " + f.where));
      ul.appendChild(li);
    });
    if (flagsOf[i].length) info.appendChild(ul);
    if (!flagsOf[i].some(function (k) { return D.flags[k].finding; })) info.appendChild(el("p", { "class": "m" }, "No finding names this sample."));
    head.appendChild(info); dyn.appendChild(head);
    var table = el("table", { "class": "card-layers" }), tb = el("tbody");
    layerValues(i).forEach(function (row) {
      var tr = el("tr"), th = el("th");
      th.appendChild(el("a", { href: row[2] }, row[0]));
      tr.appendChild(th); tr.appendChild(el("td", null, row[1])); tb.appendChild(tr);
    });
    table.appendChild(tb); dyn.appendChild(table);
    dyn.appendChild(el("p", { "class": "m" }, "Made in the browser from the interactive maps' data: this sample has no card in the report's text."));
    if (location.hash === "#rg-dyn") location.hash = "card-closed";
    location.hash = "rg-dyn";
  }
  var pointOf = {}, pointOfCard = {};
  D.ids.forEach(function (s, i) { pointOf[s] = i; });
  D.cards.forEach(function (c) { pointOfCard[c[1]] = c[0]; });
  function decorate(card) {  // a static card's nearest samples, as thumbnails from the atlas
    if (!atlas || card.getAttribute("data-rg")) return;
    card.setAttribute("data-rg", "1");
    Array.prototype.forEach.call(card.querySelectorAll(".card-layers a[href^='#s-'], .card-layers span[title]"), function (n) {
      var i = n.tagName === "A" ? pointOfCard[n.getAttribute("href").slice(1)] : pointOf[n.getAttribute("title")];
      if (i === undefined) return;
      var im = el("img", { "class": "nb", src: thumbURI(i), alt: "", width: "28", height: "28" });
      n.insertBefore(im, n.firstChild);
    });
  }
  function onCard() {
    var id = decodeURIComponent(location.hash.slice(1)), card = id && document.getElementById(id);
    if (card && card.classList.contains("card")) decorate(card);
  }
  window.addEventListener("hashchange", onCard);
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      var target = location.hash && document.getElementById(location.hash.slice(1));
      if (target && target.classList.contains("card")) location.hash = "card-closed";
    }
  });

  // ---------------------------------------------------------------- one interactive map
  function MapView(fig) {
    var layer = layers[fig.getAttribute("data-layer")], m = layer && layer.maps[fig.getAttribute("data-map")];
    var img = fig.querySelector("img");
    if (!m || !img) return;
    this.fig = fig; this.layer = layer; this.m = m;
    var xy = new Uint16Array(bytes(m.xy));
    this.x = new Float32Array(P); this.y = new Float32Array(P);
    for (var i = 0; i < P; i++) { this.x[i] = xy[2 * i] / 65535; this.y[i] = xy[2 * i + 1] / 65535 * m.aspect; }
    this.density = m.density ? new Uint8Array(bytes(m.density)) : null;
    this.W = +img.getAttribute("width") || 640; this.H = +img.getAttribute("height") || 500;
    this.k = 1; this.tx = 0; this.ty = 0; this.hover = -1;
    this.mode = fig.getAttribute("data-colour") || "class";
    this.build(img);
    this.draw();
  }
  MapView.prototype.modes = function () {
    var out = [["class", "class"]];
    this.layer.values.forEach(function (v, k) { if (v.kind === "slice") out.push(["v" + k, v.name]); });
    out.push(["finding", "finding"]);
    D.metadata.forEach(function (m, k) { out.push(["m" + k, m.name]); });
    return out;
  };
  MapView.prototype.build = function (img) {
    var self = this, fig = this.fig;
    if (this.mode === "slice") {
      this.mode = "class";
      this.layer.values.forEach(function (v, k) { if (v.kind === "slice") self.mode = "v" + k; });
    }
    var tools = el("div", { "class": "rg-tools" });
    var sel = el("select", { "aria-label": "Colour the map by" });
    this.modes().forEach(function (o) {
      var opt = el("option", { value: o[0] }, "colour: " + o[1]);
      if (o[0] === self.mode) opt.selected = true;
      sel.appendChild(opt);
    });
    sel.addEventListener("change", function () { self.mode = sel.value; self.draw(); });
    tools.appendChild(sel);
    [["+", "Zoom in", 1.5], ["−", "Zoom out", 1 / 1.5]].forEach(function (b) {
      var btn = el("button", { type: "button", "aria-label": b[1], title: b[1] }, b[0]);
      btn.addEventListener("click", function () { self.zoom(b[2], self.W / 2, self.H / 2); });
      tools.appendChild(btn);
    });
    var reset = el("button", { type: "button", title: "Reset the view" }, "reset");
    reset.addEventListener("click", function () { self.k = 1; self.tx = self.ty = 0; self.draw(); });
    tools.appendChild(reset);
    tools.appendChild(el("span", { "class": "m" }, D.note));
    var dpr = window.devicePixelRatio || 1;
    var c = el("canvas", { tabindex: "0", role: "img", "aria-label": img.getAttribute("alt") + " (interactive: hover a dot, click for its card; + and − zoom, arrows pan)" });
    c.width = Math.round(this.W * dpr); c.height = Math.round(this.H * dpr);
    c.style.width = this.W + "px"; c.style.height = this.H + "px";
    this.canvas = c; this.ctx = c.getContext("2d"); this.ctx.scale(dpr, dpr);
    var box = el("div", { "class": "rg-canvas" });
    var tip = el("div", { "class": "rg-tip", role: "tooltip", id: "tip-" + maps.length });
    tip.hidden = true;
    c.setAttribute("aria-describedby", tip.id);
    box.appendChild(c); box.appendChild(tip);
    this.tip = tip;
    this.legend = el("div", { "class": "rg-legend" });
    var holder = fig.querySelector(".imap-box");
    holder.hidden = true;
    var mapEl = fig.querySelector("map");
    if (mapEl) mapEl.hidden = true;
    fig.insertBefore(tools, holder);
    fig.insertBefore(box, holder);
    fig.insertBefore(this.legend, holder);
    fig.classList.add("rg-live");
    var drag = null;
    c.addEventListener("mousemove", function (e) {
      var p = self.local(e);
      if (drag) { self.tx = drag.tx + p[0] - drag.x; self.ty = drag.ty + p[1] - drag.y; drag.moved = true; self.draw(); return; }
      self.setHover(self.nearest(p[0], p[1]), p);
    });
    c.addEventListener("mouseleave", function () { drag = null; self.setHover(-1); });
    c.addEventListener("mousedown", function (e) { var p = self.local(e); drag = { x: p[0], y: p[1], tx: self.tx, ty: self.ty, moved: false }; });
    c.addEventListener("mouseup", function (e) {
      var p = self.local(e), moved = drag && drag.moved;
      drag = null;
      if (!moved) { var i = self.nearest(p[0], p[1]); if (i >= 0) openCard(i); }
    });
    c.addEventListener("wheel", function (e) {
      e.preventDefault();
      var p = self.local(e);
      self.zoom(e.deltaY < 0 ? 1.25 : 0.8, p[0], p[1]);
    }, { passive: false });
    c.addEventListener("dblclick", function () { self.k = 1; self.tx = self.ty = 0; self.draw(); });
    c.addEventListener("keydown", function (e) {
      var step = 40, done = true;
      if (e.key === "+" || e.key === "=") self.zoom(1.5, self.W / 2, self.H / 2);
      else if (e.key === "-") self.zoom(1 / 1.5, self.W / 2, self.H / 2);
      else if (e.key === "ArrowLeft") self.tx += step;
      else if (e.key === "ArrowRight") self.tx -= step;
      else if (e.key === "ArrowUp") self.ty += step;
      else if (e.key === "ArrowDown") self.ty -= step;
      else if (e.key === "0") { self.k = 1; self.tx = self.ty = 0; }
      else done = false;
      if (done) { e.preventDefault(); self.draw(); }
    });
  };
  MapView.prototype.local = function (e) {
    var r = this.canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  MapView.prototype.frame = function () {
    // world (x in 0..1, y in 0..aspect) -> the fitted frame -> zoomed by k and moved by (tx, ty)
    var pad = 14, a = this.m.aspect, s = Math.min(this.W - 2 * pad, (this.H - 2 * pad) / a);
    return { s: s * this.k, ox: (this.W - s) / 2 * this.k + this.tx, oy: (this.H - s * a) / 2 * this.k + this.ty, a: a };
  };
  MapView.prototype.zoom = function (f, cx, cy) {
    var k = Math.max(0.5, Math.min(64, this.k * f));
    f = k / this.k;
    this.tx = cx - f * (cx - this.tx);  // the point under (cx, cy) stays in place
    this.ty = cy - f * (cy - this.ty);
    this.k = k;
    this.draw();
  };
  MapView.prototype.colourOf = function () {
    var mode = this.mode, self = this, legend = [];
    if (mode.charAt(0) === "v") {
      var v = this.layer.values[+mode.slice(1)];
      var sizes = {};
      for (var i = 0; i < P; i++) sizes[v.arr[i]] = (sizes[v.arr[i]] || 0) + 1;
      Object.keys(sizes).sort(function (a, b) { return a - b; }).forEach(function (s) {
        if (+s > 0) legend.push(["S" + s, PALETTE[(s - 1) % 20], sizes[s], function (i) { return v.arr[i] === +s; }]);
      });
      if (sizes[0]) legend.push(["no slice", GREY, sizes[0], function (i) { return v.arr[i] === 0; }]);
      return { of: function (i) { var s = v.arr[i]; return s > 0 ? PALETTE[(s - 1) % 20] : GREY; }, legend: legend };
    }
    if (mode === "finding") {
      var mine = [];
      D.flags.forEach(function (f, k) { if (f.finding && (!f.layer || f.layer === self.layer.anchor)) mine.push(k); });
      var first = new Int32Array(P).fill(-1);
      mine.forEach(function (k, n) {
        var pts = D.flags[k].pts;
        for (var j = 0; j < pts.length; j++) if (first[pts[j]] < 0) first[pts[j]] = n;
        legend.push([D.flags[k].name, PALETTE[n % 20], pts.length, function (i) { return flagsOf[i].indexOf(k) >= 0; }]);
      });
      legend.push(["no finding", GREY, 0, function (i) { return first[i] < 0; }]);
      return { of: function (i) { return first[i] < 0 ? GREY : PALETTE[first[i] % 20]; }, legend: legend };
    }
    if (mode.charAt(0) === "m") {
      var md = D.metadata[+mode.slice(1)];
      md.values.forEach(function (name, k) { legend.push([name, PALETTE[k % 20], 0, function (i) { return md.arr[i] === k; }]); });
      return { of: function (i) { var c = md.arr[i]; return c === 65535 ? GREY : PALETTE[c % 20]; }, legend: legend };
    }
    D.classes.forEach(function (c, k) { legend.push([c.name, c.colour, 0, function (i) { return labels[i] === k; }]); });
    return { of: function (i) { return D.classes[labels[i]].colour; }, legend: legend.length <= 40 ? legend : [] };
  };
  MapView.prototype.draw = function () {
    var g = this.ctx, f = this.frame(), W = this.W, H = this.H, x = this.x, y = this.y;
    g.clearRect(0, 0, W, H);
    g.fillStyle = "#fff"; g.fillRect(0, 0, W, H);
    if (this.density) {
      var G = this.m.grid, cw = f.s / G, ch = f.s * f.a / G;
      for (var gy = 0; gy < G; gy++) for (var gx = 0; gx < G; gx++) {
        var v = this.density[gy * G + gx];
        if (!v) continue;
        g.fillStyle = "rgba(60,66,76," + (0.06 + 0.3 * v / 255).toFixed(3) + ")";
        g.fillRect(f.ox + gx * cw, f.oy + (G - 1 - gy) * ch, cw + 0.5, ch + 0.5);
      }
    }
    var col = this.colourOf(), r = Math.max(1.6, Math.min(6, (P > 3000 ? 2 : 2.8) * Math.sqrt(this.k)));
    var hi = highlight;
    g.globalAlpha = hi ? 0.18 : 0.9;
    for (var pass = 0; pass < 2; pass++) {  // the grey ("none") first: what a colour marks stays on top
      for (var n = 0; n < P; n++) {
        var i = order[n], c = col.of(i);
        if ((hi && hi[i]) || (c === GREY) !== (pass === 0)) continue;
        g.fillStyle = c;
        g.beginPath(); g.arc(f.ox + x[i] * f.s, f.oy + (f.a - y[i]) * f.s, r, 0, 6.2832); g.fill();
      }
    }
    g.globalAlpha = 1;
    if (hi) {
      g.lineWidth = 1.5; g.strokeStyle = "#111";
      for (n = 0; n < P; n++) {
        i = order[n];
        if (!hi[i]) continue;
        g.fillStyle = col.of(i);
        g.beginPath(); g.arc(f.ox + x[i] * f.s, f.oy + (f.a - y[i]) * f.s, r + 2, 0, 6.2832); g.fill(); g.stroke();
      }
    }
    if (this.hover >= 0) {
      i = this.hover;
      g.lineWidth = 2; g.strokeStyle = "#111";
      g.beginPath(); g.arc(f.ox + x[i] * f.s, f.oy + (f.a - y[i]) * f.s, r + 4, 0, 6.2832); g.stroke();
    }
    this.drawLegend(col.legend);
  };
  MapView.prototype.drawLegend = function (items) {
    var key = this.mode + items.length;
    if (this.legendKey === key) return;
    this.legendKey = key;
    var L = this.legend;
    while (L.firstChild) L.removeChild(L.firstChild);
    items.slice(0, 40).forEach(function (it) {
      var b = el("button", { type: "button", "class": "rg-key", title: "Highlight " + it[0] });
      var sw = el("span", { "class": "swatch", style: "--c: " + it[1] });
      b.appendChild(sw); b.appendChild(document.createTextNode(it[0] + (it[2] ? " (" + it[2] + ")" : "")));
      b.addEventListener("click", function () {
        var hit = new Uint8Array(P);
        for (var i = 0; i < P; i++) if (it[3](i)) hit[i] = 1;
        input.value = "";
        setHighlight(hit, "“" + it[0] + "”");
      });
      L.appendChild(b);
    });
  };
  MapView.prototype.nearest = function (px, py) {
    var f = this.frame(), best = -1, bd = 100, x = this.x, y = this.y;  // within 10 px
    for (var i = 0; i < P; i++) {
      var dx = f.ox + x[i] * f.s - px, dy = f.oy + (f.a - y[i]) * f.s - py, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  };
  MapView.prototype.setHover = function (i, p) {
    var tip = this.tip;
    if (i !== this.hover) { this.hover = i; this.draw(); }
    this.canvas.style.cursor = i >= 0 ? "pointer" : "default";
    if (i < 0) { tip.hidden = true; return; }
    while (tip.firstChild) tip.removeChild(tip.firstChild);
    var name = D.classes[labels[i]].name, src = thumbURI(i);
    if (src) tip.appendChild(el("img", { src: src, alt: name + " " + D.ids[i], width: "96", height: "96" }));
    var body = el("div");
    body.appendChild(el("b", null, name));
    body.appendChild(el("div", { "class": "rg-id" }, D.ids[i]));
    var said = this.layer.values.filter(function (v) { return !v.per_layer; }).map(function (v) {
      var x = v.arr[i];
      return v.name + " " + (v.kind === "class" ? D.classes[x].name : v.kind === "slice" ? (x > 0 ? "S" + x : "none") : x.toFixed(2));
    });
    if (said.length) body.appendChild(el("div", null, said.join(" · ")));
    var galleries = [];
    flagsOf[i].forEach(function (k) {
      var f = D.flags[k];
      if (f.finding) body.appendChild(el("div", { "class": "rg-flag" }, f.name + (f.where ? " · " + f.where : "")));
      else galleries.push(f.name);
    });
    if (galleries.length) body.appendChild(el("div", { "class": "m" }, "in galleries: " + galleries.slice(0, 4).join(", ") + (galleries.length > 4 ? " …" : "")));
    body.appendChild(el("div", { "class": "m" }, cardOf[i] ? "click: its card" : "click: what the report knows of it"));
    tip.appendChild(body);
    tip.hidden = false;
    var left = p[0] + 14, top = p[1] + 14;
    if (left + 260 > this.W) left = Math.max(0, p[0] - 270);
    tip.style.left = left + "px"; tip.style.top = top + "px";
  };

  // ---------------------------------------------------------------- layer tabs
  var holder = document.getElementById("layers");
  var sections = holder ? Array.prototype.filter.call(holder.children, function (s) { return s.tagName === "SECTION"; }) : [];
  var tabs = [];
  function activate(anchor) {
    sections.forEach(function (s, k) {
      var on = s.id === anchor;
      s.hidden = !on;
      tabs[k].setAttribute("aria-selected", on ? "true" : "false");
      tabs[k].tabIndex = on ? 0 : -1;
    });
  }
  if (sections.length > 1) {
    var nav = el("div", { "class": "rg-tabs", role: "tablist", "aria-label": "Layers" });
    sections.forEach(function (s) {
      var title = s.querySelector("h2"), tab = el("button", { type: "button", role: "tab", "aria-controls": s.id },
        title ? title.textContent : s.id);
      tab.addEventListener("click", function () { activate(s.id); history.replaceState(null, "", "#" + s.id); });
      nav.appendChild(tab); tabs.push(tab);
      s.setAttribute("role", "tabpanel");
    });
    holder.insertBefore(nav, holder.firstChild);
    activate(sections[0].id);
  }
  function follow() {
    var id = decodeURIComponent(location.hash.slice(1)), target = id && document.getElementById(id);
    if (!target || target.classList.contains("card") || id === "card-closed") return;
    for (var k = 0; k < sections.length; k++) {
      if (sections[k].contains(target) && sections[k].hidden) activate(sections[k].id);
    }
    target.scrollIntoView();  // below the sticky bars (clearance): the page grew them after the browser scrolled
  }
  window.addEventListener("hashchange", follow);
  // a linked heading lands below the sticky search bar and layer tabs, not under them
  function clearance() {
    document.documentElement.style.scrollPaddingTop = bar.offsetHeight + (nav ? nav.offsetHeight : 0) + 8 + "px";
  }
  window.addEventListener("resize", clearance);

  // ---------------------------------------------------------------- print: everything open
  var closed = [];
  window.addEventListener("beforeprint", function () {
    closed = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    closed.forEach(function (d) { d.open = true; });
    sections.forEach(function (s) { s.hidden = false; });
  });
  window.addEventListener("afterprint", function () {
    closed.forEach(function (d) { d.open = false; });
    var on = tabs.filter(function (t) { return t.getAttribute("aria-selected") === "true"; })[0];
    if (on) activate(on.getAttribute("aria-controls"));
  });

  // ---------------------------------------------------------------- start
  var main = document.querySelector("main");
  var findings = document.getElementById("findings");
  if (main) main.insertBefore(bar, findings || main.firstChild);
  clearance();
  Array.prototype.forEach.call(document.querySelectorAll("figure.imap[data-map]"), function (fig) {
    var m = new MapView(fig);
    if (m.canvas) maps.push(m);
  });
  follow();
  // a small scripting hook (tests, screenshots, a reviewer's console): where a sample sits on a map
  // (client pixels), and open its card
  window.reportgen = {
    version: 1,
    locate: function (figure, id) {
      var i = pointOf[id], m = maps.filter(function (v) { return v.fig === figure; })[0];
      if (i === undefined || !m) return null;
      var f = m.frame(), r = m.canvas.getBoundingClientRect();
      return [r.left + f.ox + m.x[i] * f.s, r.top + f.oy + (f.a - m.y[i]) * f.s];
    },
    open: function (id) { if (pointOf[id] !== undefined) openCard(pointOf[id]); }
  };
  function ready() { document.documentElement.setAttribute("data-rg-ready", performance.now().toFixed(1)); }
  if (D.atlas) {
    var im = new Image();
    im.onload = function () { atlas = im; onCard(); ready(); };
    im.onerror = ready;
    im.src = D.atlas.uri;
  } else ready();
})();
