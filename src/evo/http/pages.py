# ruff: noqa: E501  (the pages are HTML and JavaScript, kept as they read)
"""The two pages `evo serve` shows a person: the console (`/`) and the rating page (`/rate`).

Plain HTML and JavaScript, no outside resources (the server may have no internet): each page calls
the same HTTP API as any client, with the API key typed into it (kept in the browser's localStorage).
"""

_COMMON = """
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
 header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:14px;align-items:center}
 header h1{font-size:17px;margin:0 12px 0 0} header a{color:#9cc3ff}
 main{padding:14px 18px;display:grid;gap:14px}
 section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 14px}
 h2{font-size:15px;margin:0 0 8px}
 table{border-collapse:collapse;width:100%} td,th{padding:4px 8px;border-bottom:1px solid #eceef2;text-align:left}
 tr.sel{background:#eaf2ff} tbody tr{cursor:pointer}
 input,select,textarea,button{font:inherit;padding:4px 6px} button{cursor:pointer}
 .err{color:#b00020;min-height:1.2em} .muted{color:#6b7280}
 .badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px;background:#e5e7eb;margin-left:4px}
 .promoted{background:#d1fae5} .rejected{background:#fee2e2} .stopped{background:#fde68a}
</style>
"""

_KEY = """
function key(){return localStorage.getItem('evoKey')||''}
function saveKey(){localStorage.setItem('evoKey',document.getElementById('key').value.trim());refresh&&refresh()}
async function api(method,path,body,isForm){
  const h={}; if(key()) h['Authorization']='Bearer '+key();
  if(body!==undefined&&!isForm) h['content-type']='application/json';
  const r=await fetch(path,{method,headers:h,body:body===undefined?undefined:(isForm?body:JSON.stringify(body))});
  const t=await r.text(); let j; try{j=JSON.parse(t)}catch(e){j={text:t}}
  if(!r.ok) throw new Error((j.error&&j.error.message)||('HTTP '+r.status));
  return j}
function say(msg){document.getElementById('status').textContent=msg||''}
function esc(s){return String(s==null?'':s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
document.addEventListener('DOMContentLoaded',()=>{document.getElementById('key').value=key()});
"""

CONSOLE = """<!doctype html><html><head><title>evo console</title>""" + _COMMON + """</head><body>
<header><h1>evo</h1><label>API key <input id="key" type="password" size="28" placeholder="none on a keyless 127.0.0.1 server"></label>
<button onclick="saveKey()">use</button><a href="/rate">rate answers</a></header>
<main>
<div id="status" class="err"></div>
<section><h2>Fine-tuning jobs</h2>
<table id="jobs"><thead><tr><th>job</th><th>model</th><th>status</th><th>fine-tuned model</th><th>decision</th></tr></thead><tbody></tbody></table>
<div id="job-detail" class="muted">Choose a job to follow its loss.</div>
<svg id="curve" width="640" height="220" viewBox="0 0 640 220" style="background:#fbfcfd;border:1px solid #eceef2"></svg>
<div id="events" class="muted"></div>
</section>
<section><h2>Upload a file and start a job</h2>
<p><input id="upload-file" type="file" accept=".jsonl,application/jsonl"> <button id="upload" onclick="upload()">upload</button>
<span id="uploaded" class="muted"></span></p>
<p><label>model <input id="job-model" value="champion" size="12"></label>
<label>training file <select id="job-training"></select></label>
<label>validation file <select id="job-validation"><option value="">none</option></select></label></p>
<p><label>epochs <input id="job-epochs" type="number" min="1" value="1" style="width:5em"></label>
<label>lr multiplier <input id="job-lr" type="number" min="0" step="0.1" value="1" style="width:5em"></label>
<label>suffix <input id="job-suffix" value="console" size="12"></label>
<button id="start" onclick="startJob()">start job</button></p>
</section>
<section><h2>Lineage</h2><ul id="lineage"></ul></section>
<section><h2>A/B</h2><div id="ab"></div><h2>Earlier rounds</h2><ul id="ab-rounds" class="muted"></ul></section>
</main>
<script>""" + _KEY + """
let selected=null;
async function refresh(){
  try{
    const jobs=(await api('GET','/v1/fine_tuning/jobs?limit=50')).data;
    const tb=document.querySelector('#jobs tbody'); tb.innerHTML='';
    for(const j of jobs){
      const tr=document.createElement('tr'); tr.dataset.id=j.id; if(j.id===selected) tr.className='sel';
      tr.innerHTML='<td>'+esc(j.id)+'</td><td>'+esc(j.model)+'</td><td class="status">'+esc(j.status)+'</td><td>'
        +esc(j.fine_tuned_model||'')+'</td><td>'+esc((j.evo&&j.evo.decision)||'')+'</td>';
      tr.onclick=()=>{selected=j.id;refresh()}; tb.appendChild(tr)}
    if(!selected&&jobs.length) selected=jobs[0].id;
    if(selected) await showJob(selected);
    const files=(await api('GET','/v1/files?purpose=fine-tune')).data;
    for(const id of ['job-training','job-validation']){
      const sel=document.getElementById(id), keep=sel.value, none=id==='job-validation';
      sel.innerHTML=(none?'<option value="">none</option>':'')+files.map(f=>'<option value="'+esc(f.id)+'">'
        +esc(f.filename)+' ('+f.records+' records)</option>').join('');
      if(keep) sel.value=keep}
    await lineage(); await ab(); say('');
  }catch(e){say(e.message)}}
async function showJob(id){
  const evs=(await api('GET','/v1/fine_tuning/jobs/'+id+'/events?limit=1000')).data.reverse();
  const pts=evs.filter(e=>e.type==='metrics').map(e=>e.data);
  document.getElementById('job-detail').textContent=id+': '+pts.length+' checkpoint(s)';
  document.getElementById('events').textContent=evs.slice(-3).map(e=>e.message).join(' | ');
  drawCurve(pts)}
function drawCurve(pts){
  const svg=document.getElementById('curve'), W=640, H=220, P=30; svg.innerHTML='';
  if(!pts.length) return;
  const xs=pts.map(p=>p.step), ys=pts.flatMap(p=>[p.train_loss,p.valid_loss]);
  const x0=0, x1=Math.max(...pts.map(p=>p.total_steps||p.step)), y1=Math.max(...ys)*1.05, y0=0;
  const X=v=>P+(W-2*P)*(v-x0)/Math.max(1e-9,x1-x0), Y=v=>H-P-(H-2*P)*(v-y0)/Math.max(1e-9,y1-y0);
  const line=(k,color,cls)=>'<polyline class="'+cls+'" fill="none" stroke="'+color+'" stroke-width="2" points="'
    +pts.map(p=>X(p.step).toFixed(1)+','+Y(p[k]).toFixed(1)).join(' ')+'"/>'
    +pts.map(p=>'<circle cx="'+X(p.step).toFixed(1)+'" cy="'+Y(p[k]).toFixed(1)+'" r="3" fill="'+color+'"/>').join('');
  svg.innerHTML='<line x1="'+P+'" y1="'+(H-P)+'" x2="'+(W-P)+'" y2="'+(H-P)+'" stroke="#999"/>'
    +'<line x1="'+P+'" y1="'+P+'" x2="'+P+'" y2="'+(H-P)+'" stroke="#999"/>'
    +'<text x="'+P+'" y="18" font-size="12">loss (train: blue, validation: orange) by step; max '+y1.toFixed(2)+'</text>'
    +'<text x="'+(W-P)+'" y="'+(H-8)+'" font-size="12" text-anchor="end">step '+x1+'</text>'
    +line('train_loss','#2563eb','train')+line('valid_loss','#ea580c','valid')}
async function lineage(){
  const d=await api('GET','/evo/lineage'), ul=document.getElementById('lineage');
  const kids={}; for(const g of d.generations){(kids[g.parent_sha]=kids[g.parent_sha]||[]).push(g)}
  const alias=sha=>Object.entries(d.aliases).filter(([a,s])=>s===sha).map(([a])=>'<span class="badge">'+a+'</span>').join('');
  const item=g=>'<li data-gen="'+esc(g.GEN_ID)+'"><b>'+esc(g.GEN_ID)+'</b> <span class="badge '+esc(g.decision)+'">'
    +esc(g.decision)+'</span>'+alias(g.child_sha)+(g.fine_tuned_model?' <span class="muted">'+esc(g.fine_tuned_model)+'</span>':'')
    +' <span class="muted">generalization '+esc(g.eval_generalization||'n/a')+', recall '+esc(g.eval_recall||'n/a')
    +', style drift '+esc(g.eval_style_drift||'n/a')+(g.eval_general?', general kept '+esc(g.eval_general):'')+'</span>'
    +((kids[g.child_sha]||[]).length?'<ul>'+kids[g.child_sha].map(item).join('')+'</ul>':'')+'</li>';
  const roots=d.generations.filter(g=>!d.generations.some(p=>p.child_sha===g.parent_sha));
  ul.innerHTML=roots.map(item).join('')}
function gen(g,sha){return esc(g||'?')+' <span class="muted">'+esc((sha||'none').slice(0,12))+'</span>'}
function wins(p){return 'candidate preferred on '+p.candidate_wins+', champion on '+p.champion_wins+', ties '+p.ties}
async function ab(){
  const s=await api('GET','/ab/stats'), r=s.round, v=s.verdict, p=s.pairwise, k=s.skipped, at=k.by_arm_shown_as_a;
  document.getElementById('ab').innerHTML='<span id="ab-round" data-round="'+esc(r.id)+'">round '+esc(r.id)+'</span>: champion '
    +gen(r.champion_gen,r.champion)+' against candidate '+gen(r.candidate_gen,r.candidate)+'; '+p.distinct_prompts
    +' rated prompts, '+k.pairs+' of '+k.pairs_shown+' pairs skipped (champion shown as A: '+at.champion.skipped+' of '
    +at.champion.shown+', candidate shown as A: '+at.candidate.skipped+' of '+at.candidate.shown+'); '
    +(r.decided?esc(wins(p)):'which arm won which vote is shown once the round is decided')
    +'; verdict: '+esc(v.verdict)+' ('+esc(v.reason)+')';
  const old=(await api('GET','/ab/rounds')).data.filter(x=>!x.current);
  document.getElementById('ab-rounds').innerHTML=old.map(x=>'<li data-round="'+esc(x.id)+'">round '+esc(x.id)+': '
    +gen(x.champion_gen,x.champion)+' against '+gen(x.candidate_gen,x.candidate)+'; '+x.distinct_prompts+' rated prompts, '
    +x.skipped+' skipped; ended, verdict: '+esc(x.verdict)+(x.pairwise?'; '+esc(wins(x.pairwise)):'')+'</li>').join('')}
async function upload(){
  const f=document.getElementById('upload-file').files[0]; if(!f){say('choose a JSONL file first');return}
  const fd=new FormData(); fd.append('purpose','fine-tune'); fd.append('file',f,f.name);
  try{const o=await api('POST','/v1/files',fd,true);
    document.getElementById('uploaded').textContent='uploaded '+o.id+' ('+o.records+' records)';
    await refresh(); document.getElementById('job-training').value=o.id}catch(e){say(e.message)}}
async function startJob(){
  const body={model:document.getElementById('job-model').value.trim(),training_file:document.getElementById('job-training').value,
    suffix:document.getElementById('job-suffix').value.trim()||undefined,hyperparameters:{
    n_epochs:Number(document.getElementById('job-epochs').value),learning_rate_multiplier:Number(document.getElementById('job-lr').value)}};
  const v=document.getElementById('job-validation').value; if(v) body.validation_file=v;
  try{const j=await api('POST','/v1/fine_tuning/jobs',body); selected=j.id; await refresh()}catch(e){say(e.message)}}
refresh(); setInterval(refresh,2000);
</script></body></html>
"""

RATE = """<!doctype html><html><head><title>evo: rate answers</title>""" + _COMMON + """
<style>.answers{display:grid;grid-template-columns:1fr 1fr;gap:12px} .answer{white-space:pre-wrap;min-height:5em;
border:1px solid #dde1e7;border-radius:6px;padding:8px;background:#fbfcfd} .votes button{margin-right:6px}
#reveal{font-weight:600;min-height:1.4em}</style></head><body>
<header><h1>evo: which answer is better?</h1><label>API key <input id="key" type="password" size="28"></label>
<button onclick="saveKey()">use</button><a href="/">console</a></header>
<main>
<div id="status" class="err"></div>
<section><h2>Prompt</h2><textarea id="prompt" rows="3" cols="80" placeholder="Type a prompt"></textarea><br>
<button id="ask" onclick="ask()">ask both</button> <button id="next" onclick="nextQueued()">next queued prompt</button></section>
<section><h2>Answers (which model wrote which is shown once the round is decided)</h2>
<div class="answers"><div><b>A</b><div id="answer-a" class="answer"></div></div><div><b>B</b><div id="answer-b" class="answer"></div></div></div>
<p class="votes"><button id="vote-a" onclick="vote('a')" disabled>A is better [1]</button>
<button id="vote-b" onclick="vote('b')" disabled>B is better [2]</button><button id="vote-tie" onclick="vote('tie')" disabled>tie [3]</button>
<button id="vote-bad" onclick="vote('both_bad')" disabled>both bad [4]</button>
<button id="skip" onclick="skip()" disabled>skip [5]</button></p><div id="reveal"></div></section>
<section><h2>Leaderboard (decided rounds)</h2><table id="leaderboard"><thead><tr><th>#</th><th>generation</th><th>strength</th>
<th>95% interval</th><th>votes</th></tr></thead><tbody></tbody></table><p id="method" class="muted"></p></section>
</main>
<script>""" + _KEY + """
let pair=null;
function buttons(on){for(const id of ['vote-a','vote-b','vote-tie','vote-bad','skip']) document.getElementById(id).disabled=!on}
async function passOver(){  // a pair shown and not voted on is recorded as skipped
  if(!pair) return; const p=pair; pair=null; buttons(false);
  try{await api('POST','/v1/feedback/skip',{pair_id:p})}catch(e){say(e.message)}}
async function ask(){
  const p=document.getElementById('prompt').value.trim(); if(!p){say('type a prompt first');return}
  await passOver();
  say('asking both models...'); buttons(false); document.getElementById('reveal').textContent='';
  try{const r=await api('POST','/v1/side_by_side',{messages:[{role:'user',content:p}],max_tokens:48,temperature:0});
    pair=r.pair_id; document.getElementById('answer-a').textContent=r.a.choices[0].message.content;
    document.getElementById('answer-b').textContent=r.b.choices[0].message.content; buttons(true); say('')}
  catch(e){say(e.message)}}
async function nextQueued(){
  await passOver();
  try{document.getElementById('prompt').value=(await api('GET','/evo/rate/next')).prompt; await ask()}catch(e){say(e.message)}}
async function skip(){await passOver(); document.getElementById('reveal').textContent='skipped'}
async function vote(which){
  if(!pair) return; buttons(false);
  try{const r=await api('POST','/v1/feedback/pairwise',{pair_id:pair,preferred:which}); pair=null;
    const name=x=>x.arm+(x.sha?' ('+x.sha.slice(0,8)+')':'');
    document.getElementById('reveal').textContent=r.revealed?'A was the '+name(r.revealed.a)+', B was the '+name(r.revealed.b)+'.'
      :'Vote recorded. Which model wrote which is shown once the round is decided.';
    await board()}catch(e){say(e.message)}}
window.addEventListener('pagehide',()=>{if(!pair) return; const h={'content-type':'application/json'};
  if(key()) h['Authorization']='Bearer '+key();
  fetch('/v1/feedback/skip',{method:'POST',headers:h,body:JSON.stringify({pair_id:pair}),keepalive:true}); pair=null});
async function board(){
  try{const b=await api('GET','/evo/leaderboard'), tb=document.querySelector('#leaderboard tbody');
    tb.innerHTML=b.data.map((r,i)=>'<tr><td>'+(i+1)+'</td><td>'+esc(r.gen_id||r.sha.slice(0,8))+'</td><td>'+r.strength.toFixed(2)
      +'</td><td>'+r.interval[0].toFixed(2)+' to '+r.interval[1].toFixed(2)+'</td><td>'+r.votes+'</td></tr>').join('');
    document.getElementById('method').textContent=b.votes+' votes of '+b.rounds.length+' decided round(s)'
      +(b.open_round_votes?' ('+b.open_round_votes+' decisive votes of the open round wait for its verdict)':'')+'; '+b.method}catch(e){say(e.message)}}
document.addEventListener('keydown',e=>{if(e.target.tagName==='TEXTAREA'||e.target.tagName==='INPUT') return;
  const k={'1':'a','2':'b','3':'tie','4':'both_bad'}[e.key]; if(k&&pair) vote(k); if(e.key==='5'&&pair) skip()});
const refresh=board; board();
</script></body></html>
"""
