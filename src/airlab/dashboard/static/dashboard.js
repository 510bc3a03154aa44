// airlab dashboard: polls the JSON reads and redraws in place (no reload).
// Everything that comes from the store is written as text (textContent / text nodes), and
// trace names handed to Plotly are entity-escaped: Plotly reads a few tags in its labels.
"use strict";
(function () {
  const POLL_MS = 1000 * Math.max(0.2, parseFloat(document.documentElement.dataset.poll) || 2);
  const PHASES = ["ideas", "design", "implementation", "runs", "validation", "post", "done"];
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                  "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const S = { selected: null, overview: null, exp: null, team: null, tick: 0,
              xAxis: "units", yAxis: null, ideaStatus: "", expKey: null };

  // -- helpers ---------------------------------------------------------------------------
  function el(tag, cls, ...children) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function $(id) { return document.getElementById(id); }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function plotText(s) {  // Plotly renders <b>, <br>, <a href>... in names: show them as text
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return Number(v).toExponential(2);
    return String(parseFloat(Number(v).toPrecision(digits || 4)));
  }
  function count(v) { return (v === null || v === undefined) ? "—" : Math.round(v).toLocaleString("en-US"); }
  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "—";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }
  function badge(text, cls) { return el("span", "badge " + (cls || ""), text); }
  function table(node, head, rows) {
    clear(node);
    const tr = el("tr");
    for (const h of head) tr.append(el("th", h.num ? "num" : "", h.label));
    node.append(el("thead", null, tr));
    const body = el("tbody");
    for (const r of rows) {
      const row = el("tr");
      r.forEach((cell, i) => row.append(el("td", head[i].num ? "num" : "", cell)));
      body.append(row);
    }
    node.append(body);
  }
  async function get(url) {
    const r = await fetch(url, { cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) throw new Error((body && body.error) || ("HTTP " + r.status));
    return body;
  }
  function setStatus(text, error) {
    const s = clear($("status"));
    s.classList.toggle("error", !!error);
    if (!error) s.append(el("span", "dot"));
    s.append(text);
  }

  // -- selection: #exp=NAME pins an experiment; none follows the one running now ----------
  function fromHash() {
    const m = /^#exp=(.*)$/.exec(location.hash);
    S.selected = m ? decodeURIComponent(m[1]) : null;
    $("follow").classList.toggle("on", S.selected === null);
  }
  function followed() {
    const exps = (S.overview && S.overview.experiments) || [];
    if (!exps.length) return null;
    const score = (e) => [(e.runs.running || 0) > 0 ? 1 : 0, e.kind === "experiment" ? 1 : 0,
                          e.updated_at || 0];
    let best = exps[0];
    for (const e of exps) {
      const a = score(e), b = score(best);
      if (a[0] > b[0] || (a[0] === b[0] && (a[1] > b[1] || (a[1] === b[1] && a[2] > b[2])))) best = e;
    }
    return best.name;
  }
  function current() { return S.selected !== null ? S.selected : followed(); }

  // -- overview --------------------------------------------------------------------------
  function renderOverview() {
    const o = S.overview;
    $("store").textContent = o.store;
    const list = clear($("experiments"));
    const now = current();
    const exps = o.experiments.slice().sort((a, b) => (b.updated_at || 0) - (a.updated_at || 0));
    for (const e of exps) {
      const done = (e.runs.finished || 0);
      const meta = [done + "/" + e.total + " finished"];
      if (e.runs.running) meta.push(e.runs.running + " running");
      if (e.runs.failed) meta.push(e.runs.failed + " failed");
      if (e.kind !== "experiment") meta.push(e.kind);
      const li = el("li", e.name === now ? "selected" : "",
                    el("div", "name", e.name, " ",
                       e.rating !== null && e.rating >= 1 ? badge(e.rating + "/10", "v-better") : null),
                    el("div", "meta", meta.join(" · ")));
      li.dataset.name = e.name;
      if (e.progress !== null) {
        const bar = el("div", "bar", el("span"));
        bar.firstChild.style.width = (100 * e.progress).toFixed(1) + "%";
        li.append(bar);
      }
      li.addEventListener("click", () => { location.hash = "exp=" + encodeURIComponent(e.name); });
      list.append(li);
    }
    if (!exps.length) list.append(el("li", "muted", "nothing stored yet: start `airlab run`"));
  }

  // -- one experiment --------------------------------------------------------------------
  function renderExperiment() {
    const v = S.exp, x = v.experiment;
    $("exp-name").textContent = x.name;
    $("exp-hypothesis").textContent = x.hypothesis || "";
    const budget = Object.entries(x.budget || {}).map(([k, n]) => count(n) + " " + k).join(", ");
    const facts = [x.workload, x.metric + (x.direction === "minimize" ? " (lower is better)" : " (higher is better)")];
    if (budget) facts.push("budget " + budget);
    if (x.seeds && x.seeds.length) facts.push("seeds " + x.seeds.join(", "));
    if (x.arms && x.arms.length) facts.push("arms " + x.arms.join(", "));
    $("exp-facts").textContent = facts.join(" · ");
    const xsel = $("x-axis");
    xsel.options[0].textContent = x.unit || "tokens";
    const ysel = $("y-axis");
    const have = new Set();
    for (const c of v.curves) for (const k of ["val_loss", "val_acc", "train_loss"]) if (c.points[k]) have.add(k);
    if (!have.size) have.add(x.metric);
    const want = Array.from(have);
    if (Array.from(ysel.options).map((o) => o.value).join() !== want.join()) {
      clear(ysel);
      for (const k of want) ysel.append(new Option(k, k));
    }
    if (!S.yAxis || !have.has(S.yAxis)) S.yAxis = have.has(x.metric) ? x.metric : want[0];
    ysel.value = S.yAxis;
    renderPlot();
    renderRuns();
    renderResults();
  }

  function renderPlot() {
    const v = S.exp, x = v.experiment, div = $("curves");
    if (typeof Plotly === "undefined") return;
    const armIndex = new Map();
    (x.arms || []).forEach((a, i) => armIndex.set(a, i));
    const traces = [], shown = new Set();
    let xmin = Infinity, xmax = -Infinity, total = 0;
    for (const c of v.curves) {
      const xs = c.points[S.xAxis] || [], ys = c.points[S.yAxis] || [];
      const px = [], py = [];
      for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
        if (xs[i] === null || ys[i] === null) continue;
        px.push(xs[i]); py.push(ys[i]);
        xmin = Math.min(xmin, xs[i]); xmax = Math.max(xmax, xs[i]);
      }
      if (!armIndex.has(c.arm)) armIndex.set(c.arm, armIndex.size);
      const color = COLORS[armIndex.get(c.arm) % COLORS.length];
      const going = c.state === "running" || c.state === "pending";
      total += px.length;
      traces.push({
        x: px, y: py, type: "scatter", mode: "lines+markers",
        name: plotText(c.arm + " seed " + c.seed) + (going ? " (running)" : ""),
        legendgroup: plotText(c.arm), showlegend: true,
        line: { color: color, width: going ? 2.5 : 1.5, dash: going ? "solid" : "solid" },
        marker: { size: going ? 6 : 4, color: color },
        opacity: c.state === "failed" ? 0.45 : 1,
        meta: { run_id: c.run_id, arm: c.arm, seed: c.seed, state: c.state },
        hovertemplate: "%{x:.4g}, %{y:.4g}<extra>%{fullData.name}</extra>",
      });
    }
    const t = v.target;
    if (t && isFinite(xmin) && (S.yAxis === x.metric)) {
      traces.push({ x: [xmin, xmax], y: [t.value, t.value], type: "scatter", mode: "lines",
                    name: "target " + num(t.value, 4), line: { color: "#222", dash: "dash", width: 1.5 },
                    meta: { target: true }, hoverinfo: "name" });
    }
    $("target-note").textContent = t ? ("time-to-target line: " + num(t.value, 4) +
      (t.low !== t.high ? " (per seed pair " + num(t.low, 4) + "–" + num(t.high, 4) + ")" : "") +
      ", " + t.source) : "time-to-target line: once 2 baseline runs have finished";
    const xlabel = S.xAxis === "units" ? (x.unit || "tokens") : (S.xAxis === "train_seconds" ? "training seconds" : "FLOPs");
    const layout = {
      margin: { l: 60, r: 10, t: 28, b: 45 }, uirevision: x.name + S.xAxis + S.yAxis,
      xaxis: { title: { text: plotText(xlabel) }, zeroline: false },
      yaxis: { title: { text: plotText(S.yAxis) }, zeroline: false },
      legend: { font: { size: 11 } }, hovermode: "closest",
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    };
    Plotly.react(div, traces, layout, { displaylogo: false, responsive: true,
                                        modeBarButtonsToRemove: ["toImage"] });
    div.dataset.points = String(total);
    div.dataset.experiment = x.name;
  }

  function renderRuns() {
    const v = S.exp;
    const head = [{ label: "arm" }, { label: "seed", num: 1 }, { label: "state" }, { label: "progress" },
                  { label: "step", num: 1 }, { label: v.experiment.unit || "tokens", num: 1 },
                  { label: "loss", num: 1 }, { label: (v.experiment.unit === "samples" ? "samples" : "tokens") + "/s", num: 1 },
                  { label: "ETA", num: 1 }, { label: v.experiment.metric, num: 1 }];
    const rows = v.runs.map((r) => {
      const bar = el("div", "bar", el("span"));
      bar.firstChild.style.width = (100 * (r.progress || 0)).toFixed(1) + "%";
      const state = el("span", null, badge(r.state, "s-" + r.state),
                       r.attempts > 1 ? " attempt " + r.attempts : null);
      if (r.reason && r.state !== "finished") state.append(el("div", "reason", r.reason));
      return [r.arm, r.seed, state, bar, count(r.step), count(r.units), num(r.loss, 4),
              count(r.units_per_s), r.state === "running" ? dur(r.eta_s) : "", num(r.final, 4)];
    });
    table($("runs"), head, rows);
  }

  function renderResults() {
    const v = S.exp, a = v.analysis;
    const note = $("results-note"), tbl = $("results"), verdict = clear($("verdict"));
    verdict.removeAttribute("data-rating");
    if (!a || a.error) {
      clear(tbl);
      const left = v.runs.filter((r) => r.state === "pending" || r.state === "running").length;
      note.textContent = a && a.error ? "not analysed: " + a.error :
        (left ? "The result table appears when the runs are analysed (" + left + " of " +
                v.runs.length + " runs still to go)." : "No result table for this kind of experiment.");
    } else {
      note.textContent = "Decisions: paired t + Holm (better/worse); equivalent = TOST within " +
        a.margin + (a.quality ? "; " + a.quality : "") + (a.quick ? " (a --quick smoke test: not rated)" : "");
      const head = [{ label: "arm" }, { label: "n" }, { label: a.metric + " mean ± sd", num: 1 },
                    { label: "95% CI", num: 1 }, { label: "Δ vs base", num: 1 }, { label: "p (Holm)", num: 1 },
                    { label: "d_z", num: 1 }, { label: "train s", num: 1 }, { label: "throughput", num: 1 },
                    { label: "time-to-target ×", num: 1 }, { label: "verdict" }];
      table(tbl, head, a.rows.map((r) => [r.arm, r.n, r.mean_sd, r.ci, r.delta, r.p_holm, r.dz,
        r.train_s, r.throughput, r.time_to_target,
        el("span", null, badge(r.verdict, "v-" + r.verdict), r.flags.length ? " ⚠ " + r.flags.join(", ") : null)]));
    }
    const vd = v.verdict;
    if (vd) {
      verdict.dataset.rating = String(vd.rating);
      verdict.append(el("span", "rating", vd.rating >= 1 ? vd.rating + "/10" : "—"),
                     el("strong", null, vd.band),
                     el("span", "muted", "  best arm " + (vd.best_arm || "—") + " · rubric " + vd.rubric_version));
      const ul = el("ul");
      for (const c of vd.critique || []) ul.append(el("li", null, c));
      verdict.append(ul);
    }
  }

  // -- the team --------------------------------------------------------------------------
  function renderTeam() {
    const t = S.team;
    const sp = clear($("sprint"));
    const cur = t.sprints && t.sprints.current;
    if (!cur) {
      sp.append(el("p", "muted", "no sprint yet: `airlab sprint` or `airlab auto`"));
    } else {
      sp.append(el("div", null, el("strong", null, cur.session + ":" + cur.number), " ",
                   badge(cur.kind), " ", badge(cur.status, cur.status === "failed" ? "s-failed" : ""),
                   cur.idea ? " idea " + cur.idea : "", cur.experiment ? " → " + cur.experiment : ""));
      const ph = el("div", "phases");
      const at = PHASES.indexOf(cur.phase);
      PHASES.forEach((p, i) => ph.append(el("span", i < at ? "done" : (i === at ? "now" : ""), p)));
      sp.append(ph);
    }
    const ratio = (d) => (d && d.ratio !== null && d.ratio !== undefined) ? num(d.ratio, 3) + "×" +
      (d.ci_low !== null && d.ci_low !== undefined ? " [" + num(d.ci_low, 3) + ", " + num(d.ci_high, 3) + "]" : "") : "—";
    table($("leaderboard"), [{ label: "recipe" }, { label: "status" }, { label: "selection", num: 1 }, { label: "fresh seeds", num: 1 }],
          (t.leaderboard || []).map((r) => [r.recipe, badge(r.status, "st-" + r.status), ratio(r.selection), ratio(r.confirmation)]));
    if (!(t.leaderboard || []).length) $("leaderboard").append(el("caption", "muted", "no recipe yet"));
    const rec = clear($("record"));
    const ideas = t.ideas || { ideas: [], record: { scored: 0 } };
    const r = ideas.record || { scored: 0 };
    rec.append(r.scored ? (r.hits + "/" + r.scored + " predictions hit (" + Math.round(100 * r.hit_rate) +
      "%), direction right " + r.direction_right + "/" + r.scored + ", median miss " + num(r.median_miss, 3))
      : "no prediction scored yet");
    const st = t.optuna || { studies: [] };
    table($("studies"), [{ label: "study" }, { label: "trials", num: 1 }, { label: "best", num: 1 }, { label: "best options" }],
          st.studies.map((s) => [s.name, String(s.trials) + (s.states && s.states.running ? " (" + s.states.running + " running)" : ""),
            num(s.best_value, 4), s.best_params ? Object.entries(s.best_params).map(([k, v]) => k + "=" + num(v, 3)).join(" ") : "—"]));
    if (st.note) $("studies").append(el("caption", "muted", st.note));
    const sel = $("idea-status");
    const statuses = Array.from(new Set(ideas.ideas.map((i) => i.status))).sort();
    if (Array.from(sel.options).slice(1).map((o) => o.value).join() !== statuses.join()) {
      while (sel.options.length > 1) sel.remove(1);
      for (const s of statuses) sel.append(new Option(s, s));
      sel.value = S.ideaStatus;
    }
    const order = { running: 0, better: 1, worse: 2, equivalent: 3, undecided: 4, untested: 5 };
    const shown = ideas.ideas.filter((i) => !S.ideaStatus || i.status === S.ideaStatus)
      .sort((a, b) => (order[a.status] ?? 9) - (order[b.status] ?? 9) || a.name.localeCompare(b.name));
    table($("ideas"), [{ label: "idea" }, { label: "status" }, { label: "scored prediction" }],
          shown.map((i) => {
            const name = el("div", null, el("strong", null, i.name), " ", el("span", "muted", i.area),
                            el("div", "small muted", i.title));
            name.title = "prediction: " + i.prediction;
            return [name, badge(i.status, "st-" + i.status),
                    i.hit === null ? "—" : (i.hit ? "hit" : "miss by " + num(i.miss_by, 2))];
          }));
    if (t.errors) setStatus("team view: " + t.errors.join("; "), true);
  }

  // -- the loop --------------------------------------------------------------------------
  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    try {
      S.overview = await get("/api/overview");
      renderOverview();
      const name = current();
      if (name !== null) {
        const v = await get("/api/experiment?name=" + encodeURIComponent(name));
        const key = JSON.stringify(v);
        if (key !== S.expKey) {  // redraw only what changed (Plotly keeps zoom: uirevision)
          S.exp = v;
          S.expKey = key;
          renderExperiment();
        }
      }
      if (S.tick % 3 === 0 || S.team === null) {
        S.team = await get("/api/team");
        renderTeam();
      }
      S.tick += 1;
      setStatus("live · updated " + new Date().toLocaleTimeString() + " · every " + (POLL_MS / 1000) + " s", false);
      document.documentElement.dataset.updates = String(S.tick);
    } catch (e) {
      setStatus("cannot read the lab: " + e.message + " (retrying)", true);
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  window.addEventListener("hashchange", () => { fromHash(); S.tick = 0; refresh(); });
  $("follow").addEventListener("click", () => {
    history.replaceState(null, "", location.pathname + location.search);
    fromHash(); refresh();
  });
  $("x-axis").addEventListener("change", (e) => { S.xAxis = e.target.value; if (S.exp) renderPlot(); });
  $("y-axis").addEventListener("change", (e) => { S.yAxis = e.target.value; if (S.exp) renderPlot(); });
  $("idea-status").addEventListener("change", (e) => { S.ideaStatus = e.target.value; if (S.team) renderTeam(); });
  fromHash();
  refresh();
})();
