// p2pz web app: the apply page's job submission and progress, preview renders, and diagnostics.
// Plain JavaScript, no dependencies: the pages work offline.
"use strict";

function token() {
  const field = document.getElementById("token");
  if (field && field.value) { sessionStorage.setItem("p2pz-token", field.value); }
  return (field && field.value) || sessionStorage.getItem("p2pz-token") || "";
}

function authHeaders() {
  const t = token();
  return t ? { "Authorization": "Bearer " + t } : {};
}

async function errorOf(response) {
  try { return (await response.json()).error || response.statusText; } catch (e) { return response.statusText; }
}

async function pollJob(id, onUpdate) {
  for (;;) {
    const r = await fetch("/api/jobs/" + id, { headers: authHeaders() });
    if (!r.ok) { throw new Error(await errorOf(r)); }
    const job = await r.json();
    onUpdate(job);
    if (job.status === "done" || job.status === "failed") { return job; }
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { node.setAttribute(k, v); }
  for (const c of children || []) { node.append(c); }
  return node;
}

// A job's input and results are its submitter's: with a token set, reading them needs it, and an <img> cannot
// send a header, so they are fetched with the token and shown (and downloaded) from blob: URLs.
async function blobUrl(url) {
  const r = await fetch(url, { headers: authHeaders() });
  if (!r.ok) { throw new Error(await errorOf(r)); }
  return URL.createObjectURL(await r.blob());
}

async function showResults(job) {
  const box = document.getElementById("results");
  box.replaceChildren();
  box.append(el("figure", { class: "result" }, [
    el("img", { src: await blobUrl(job.input_url), alt: "source", width: "256" }), el("figcaption", {}, ["source"])]));
  for (const r of job.results) {
    const name = r.direction.replace("@", "-v") + ".png";
    const src = await blobUrl(r.url);
    const prov = el("details", {}, [el("summary", {}, ["provenance"]),
      el("pre", {}, [JSON.stringify(r.provenance, null, 1)])]);
    box.append(el("figure", { class: "result", "data-direction": r.direction }, [
      el("img", { src: src, alt: "edited with " + r.direction, width: "256", class: "result-image" }),
      el("figcaption", {}, [r.direction + " · ", el("a", { href: src, download: name, class: "download" },
        ["download"])]), prov]));
  }
}

function setupApply() {
  const form = document.getElementById("apply-form");
  if (!form) { return; }
  for (const range of form.querySelectorAll("input[type=range]")) {
    const out = range.nextElementSibling;
    range.addEventListener("input", () => { out.textContent = range.value; delete range.dataset.auto; });
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData();
    const useSample = document.getElementById("use-sample").checked;
    const file = document.getElementById("image").files[0];
    if (useSample) { data.append("sample", "true"); } else if (file) { data.append("image", file); }
    for (const name of document.getElementById("directions").value.split(",")) {
      if (name.trim()) { data.append("directions", name.trim()); }
    }
    for (const field of ["scale", "xa_guidance", "guidance_scale", "steps", "seed", "caption"]) {
      const input = form.elements[field];
      // an untouched cross-attention slider means "the model's default" (0.1, or 0.01 for v-prediction)
      if (input.value !== "" && !input.dataset.auto) { data.append(field, input.value); }
    }
    const section = document.getElementById("job");
    const status = document.getElementById("job-status");
    const bar = document.getElementById("job-progress");
    const error = document.getElementById("job-error");
    section.hidden = false;
    error.hidden = true;
    document.getElementById("results").replaceChildren();
    bar.value = 0;
    status.textContent = "submitting…";
    document.getElementById("submit").disabled = true;
    try {
      const r = await fetch("/api/edits", { method: "POST", body: data, headers: authHeaders() });
      if (!r.ok) { throw new Error(await errorOf(r)); }
      const submitted = await r.json();
      const job = await pollJob(submitted.id, (j) => {
        bar.value = j.progress;
        status.textContent = j.status + (j.stage ? " · " + j.stage : "") + " · " + Math.round(j.progress * 100) + "%";
      });
      if (job.status === "failed") { throw new Error(job.error); }
      status.textContent = "done";
      bar.value = 1;
      await showResults(job);
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      status.textContent = "failed";
    } finally {
      document.getElementById("submit").disabled = false;
    }
  });
}

function setupPreviews() {
  for (const button of document.querySelectorAll(".render-preview")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      button.textContent = "rendering…";
      try {
        const r = await fetch("/api/directions/" + encodeURIComponent(button.dataset.ref) + "/preview",
          { method: "POST", headers: authHeaders() });
        if (!r.ok) { throw new Error(await errorOf(r)); }
        const job = await pollJob((await r.json()).id, (j) => {
          button.textContent = "rendering… " + Math.round(j.progress * 100) + "%";
        });
        if (job.status === "failed") { throw new Error(job.error); }
        location.reload();
      } catch (e) {
        button.textContent = "failed: " + e.message;
      }
    });
  }
}

function setupDiagnostics() {
  const box = document.getElementById("diagnostics");
  const button = document.getElementById("load-diagnostics");
  if (!box || !button) { return; }
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "computing…";
    const r = await fetch(box.dataset.url);
    if (!r.ok) { box.textContent = await errorOf(r); return; }
    const d = await r.json();
    const rows = [["stability", d.stability && d.stability.mean !== undefined ? d.stability.mean.toFixed(4) : JSON.stringify(d.stability)],
      ["sentences for 0.95", String(d.sentences_for_095)], ["word-swap cosine", Number(d.word_swap_cosine).toFixed(4)]];
    for (const c of d.checks || []) { rows.push([c.name, c.status + " (" + c.value + ")"]); }
    const table = el("table", { class: "kv" }, rows.map(([k, v]) => el("tr", {}, [el("th", {}, [k]), el("td", {}, [v])])));
    box.replaceChildren(table);
  });
}

setupApply();
setupPreviews();
setupDiagnostics();
