// The page at `/`: a playground (choose an adapter, type a prompt, watch the tokens stream) and the
// server's live figures (queue, running batch, resident adapters, tokens/s). One self-contained HTML
// file, no external assets, talking to the same OpenAI-compatible API a client uses.
export const PLAYGROUND_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>adapterkit serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 20px}header b{font-size:17px}
main{display:grid;grid-template-columns:2fr 1fr;gap:18px;padding:18px 20px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 16px}
label{display:block;font-size:13px;color:#555;margin:8px 0 3px}
select,textarea,input{width:100%;box-sizing:border-box;font:inherit;padding:6px;border:1px solid #c9ced6;border-radius:5px}
textarea{height:90px}button{margin-top:10px;padding:7px 16px;font:inherit;border:0;border-radius:5px;background:#2f6fde;color:#fff;cursor:pointer}
button:disabled{background:#9db6e6}#out{white-space:pre-wrap;min-height:120px;border:1px solid #dde1e7;border-radius:5px;padding:8px;margin-top:10px;background:#fbfbfc}
#out .p{color:#777}.row{display:flex;gap:10px}.row>div{flex:1}
table{border-collapse:collapse;width:100%}td{padding:3px 0;border-bottom:1px solid #eef0f3}td:last-child{text-align:right;font-variant-numeric:tabular-nums}
#err{color:#b3261e;margin-top:8px}small{color:#777}
</style></head>
<body><header><b>adapterkit serve</b> &nbsp;<span id="base"></span></header>
<main>
<section><h3 style="margin-top:0">Playground</h3>
<label for="model">adapter</label><select id="model"></select>
<label for="prompt">prompt</label><textarea id="prompt">The movie was</textarea>
<div class="row"><div><label for="max">max tokens</label><input id="max" type="number" value="48" min="1"></div>
<div><label for="temp">temperature</label><input id="temp" type="number" value="0" min="0" max="2" step="0.1"></div></div>
<button id="go">Generate</button> <small id="rate"></small>
<div id="out"></div><div id="err"></div></section>
<section><h3 style="margin-top:0">Server</h3><table>
<tr><td>queue</td><td id="s-queue">–</td></tr>
<tr><td>running batch</td><td id="s-running">–</td></tr>
<tr><td>tokens/s</td><td id="s-tps">–</td></tr>
<tr><td>resident adapters</td><td id="s-resident">–</td></tr>
<tr><td>known adapters</td><td id="s-known">–</td></tr>
<tr><td>tokens generated</td><td id="s-gen">–</td></tr></table>
<p><small>figures refresh every second from <code>/v1/stats</code>; Prometheus text at <a href="/metrics">/metrics</a></small></p></section>
</main>
<script>
const $ = (id) => document.getElementById(id);
async function models() {
  const r = await fetch('/v1/models'); const j = await r.json();
  $('model').innerHTML = j.data.map((m) => '<option value="' + m.id + '">' + m.id + (m.parent ? '' : ' (base)') + '</option>').join('');
}
async function stats() {
  try {
    const s = await (await fetch('/v1/stats')).json();
    $('base').textContent = s.base; $('s-queue').textContent = s.queue; $('s-running').textContent = s.running + ' / ' + s.rows;
    $('s-tps').textContent = s.tokensPerSecond.toFixed(1); $('s-resident').textContent = s.resident.map((a) => a.id).join(', ') || 'none';
    $('s-known').textContent = s.known; $('s-gen').textContent = s.generatedTokens;
  } catch (e) {}
}
$('go').onclick = async () => {
  $('go').disabled = true; $('err').textContent = ''; const out = $('out'); out.textContent = '';
  const p = document.createElement('span'); p.className = 'p'; p.textContent = $('prompt').value; out.appendChild(p);
  const gen = document.createElement('span'); gen.id = 'gen'; out.appendChild(gen);
  const t0 = performance.now(); let n = 0;
  try {
    const r = await fetch('/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: $('model').value, prompt: $('prompt').value, max_tokens: +$('max').value, temperature: +$('temp').value, stream: true }) });
    if (!r.ok) { $('err').textContent = (await r.json()).error.message; return; }
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = '';
    for (;;) {
      const { value, done } = await reader.read(); if (done) break;
      buf += dec.decode(value, { stream: true }); let i;
      while ((i = buf.indexOf('\\n\\n')) >= 0) {
        const line = buf.slice(0, i).replace(/^data: /, ''); buf = buf.slice(i + 2);
        if (line === '[DONE]') continue;
        const c = JSON.parse(line).choices[0]; if (c.text) { gen.textContent += c.text; n++; }
        $('rate').textContent = n + ' pieces, ' + (n / ((performance.now() - t0) / 1000)).toFixed(1) + '/s';
      }
    }
    out.dataset.done = '1';
  } catch (e) { $('err').textContent = String(e); } finally { $('go').disabled = false; }
};
models(); stats(); setInterval(stats, 1000);
</script></body></html>
`;
