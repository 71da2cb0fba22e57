"""One self-contained HTML report of a session: inline CSS, JS and SVG; no CDN, works offline.

The session result is embedded as JSON (<script type="application/json" id="gyroscope-data">, without
its raw "profile") next to views computed here (id "gyroscope-views": per decision its sentence, hottest
call path and per-line sample shares with the source text; the flame graph's call tree from
agent/profiles/flame.py), and rendered in the browser by the inline script below:
  - the decisions table (#decisions tbody, one <tr class="decision"> per decision): the decision as a
    sentence, the hottest call path, the raw evidence folded behind a <details>; for a decided loop or
    function, the source lines that were sampled with their share of the samples (table.lines);
  - an interactive flame graph (svg#flame, one <rect class="frame"> per call-tree node; hover says
    the function, its file and its samples; click zooms into a node, "reset" zooms out, #zoom=FUNCTION in the URL opens it zoomed; a switch
    between samples on a CPU and all samples), when the session kept stacks;
  - per entity, a chirality histogram and a spectrum (SVG bar charts, class "plot chi" /
    "plot spectrum") from entity["slcp"]["chi_hist64"] / ["spectral64"] when present, else a
    note saying the session did not record them;
  - top loops and top waits tables;
  - a per-thread timeline of waits (SVG, id "timeline") from result["timeline"]
    ([{"thread", "entity_id", "start_s", "duration_s"}]) when present; each wait's hover title (and a
    click, into #timeline-detail) says what was waited on: the entity's kind, function and place.
    ([{"thread", "entity_id", "start_s", "duration_s"}]) when present, thread names from
    result["processes"][i]["threads"].
Input: the JSON of a SessionResult (agent/model.py, schema gyroscope.session/2); agent/render.py's
HtmlRenderer is how the rest of gyroscope calls it.
"""
from __future__ import annotations

import html
import json
from typing import Any

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#1d2330;background:#fbfbfd}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .5em;border-bottom:1px solid #d8dbe2}
.meta{color:#5a6274}table{border-collapse:collapse;margin:.4em 0}
th,td{padding:3px 9px;border-bottom:1px solid #e3e5ea;text-align:left;vertical-align:top}
th{background:#eef0f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.hot{color:#b3261e;font-weight:600}.cont{color:#1f5fbf;font-weight:600}.obs{color:#5a6274}
.entity{display:inline-block;margin:0 1.2em 1.2em 0;padding:.5em;border:1px solid #e3e5ea;background:#fff;vertical-align:top}
.entity h3{font-size:.95em;margin:0 0 .3em}.note{color:#8a90a0;font-style:italic}
svg text{font:10px system-ui,sans-serif;fill:#5a6274}.errors li{color:#b3261e}
td.sentence{max-width:70em}.path{color:#5a6274;font-size:.92em;margin-top:.25em}
details{margin-top:.3em}summary{cursor:pointer;color:#5a6274}details table td{padding:1px 8px;font-size:.9em}
table.lines{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;margin:.3em 0 .6em}
table.lines td{padding:0 8px;border:0}table.lines td.bar{width:120px}
.sharebar{display:inline-block;height:9px;background:#b3261e;vertical-align:middle}
#flame rect.frame{stroke:#fff;stroke-width:.5;cursor:pointer}#flame text{font:11px system-ui,sans-serif;fill:#1d2330;pointer-events:none}
#flame-controls button,#flame-controls label{margin-right:.8em;font-size:.9em}
#timeline rect.wait{cursor:pointer}#timeline-detail{min-height:1.4em;color:#1d2330}
"""

_JS = r"""
(function(){
"use strict";
var R = JSON.parse(document.getElementById("gyroscope-data").textContent);
var SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, text){var e=document.createElement(tag);for(var k in attrs||{})e.setAttribute(k,attrs[k]);
  if(text!==undefined)e.textContent=text;return e;}
function sv(tag, attrs, text){var e=document.createElementNS(SVG,tag);for(var k in attrs||{})e.setAttribute(k,attrs[k]);
  if(text!==undefined)e.textContent=text;return e;}
function num(x){x=Number(x||0);if(!isFinite(x))return String(x);var a=Math.abs(x);
  if(a>=1e6)return (x/1e6).toFixed(2)+"M";if(a>=1e4)return (x/1e3).toFixed(1)+"k";
  if(x===Math.round(x))return String(x);return x.toPrecision(3);}
function secs(x){x=Number(x||0);if(x===0)return "0";if(x<1e-3)return (x*1e6).toFixed(0)+"\u00b5s";
  if(x<1)return (x*1e3).toFixed(1)+"ms";return x.toFixed(2)+"s";}
function pct(x){return (100*Number(x||0)).toFixed(1)+"%";}
function base(p){p=String(p||"");var i=p.lastIndexOf("/");return i>=0?p.slice(i+1):p;}
function where(o){return base(o.file)+":"+(o.line||0);}
function row(tbody, cells, cls){var tr=el("tr",cls?{"class":cls}:{});cells.forEach(function(c){
  var td=el("td",c[1]?{"class":c[1]}:{},String(c[0]));if(c[2])td.title=c[2];tr.appendChild(td);});tbody.appendChild(tr);return tr;}
function evidence(ev){var out=[];for(var k in ev||{}){var v=ev[k];if(typeof v==="object")continue;
  out.push(k+"="+(typeof v==="number"?(k.indexOf("wait_s")===0?secs(v):num(v)):v));}return out.join(", ");}

// decisions: a sentence, the hottest call path, the source lines, the raw evidence folded away
var V = JSON.parse(document.getElementById("gyroscope-views").textContent);
var tb=document.querySelector("#decisions tbody");
(R.decisions||[]).forEach(function(d,i){
  var v=(V.decisions||[])[i]||{};
  var cls=d.action==="specialize_hot_loop"?"hot":(d.action==="mitigate_contention"?"cont":"obs");
  var tr=el("tr",{"class":"decision"});
  tr.appendChild(el("td",{"class":cls},d.action));
  var td=el("td",{"class":"sentence"});
  td.appendChild(el("div",{"class":"text"},v.sentence||(d.action+" "+d.function+" ("+where(d)+")")));
  if(v.path)td.appendChild(el("div",{"class":"path"},"hottest path ("+pct(v.path_share)+" of "+v.path_samples+
    " samples there): "+v.path));
  if(v.lines&&v.lines.length){
    var lt=el("table",{"class":"lines"});
    v.lines.forEach(function(l){var r=el("tr");r.appendChild(el("td",{"class":"num"},String(l.line)));
      var b=el("td",{"class":"bar"});b.appendChild(el("span",{"class":"sharebar",style:"width:"+Math.max(1,Math.round(110*l.share))+"px"}));
      r.appendChild(b);r.appendChild(el("td",{"class":"num"},l.samples?pct(l.share):""));
      r.appendChild(el("td",{},l.text===undefined?"":l.text));lt.appendChild(r);});
    td.appendChild(el("div",{"class":"path"},"sampled lines of "+d.function+" (share of its samples)"));
    td.appendChild(lt);}
  var det=el("details",{"class":"evidence"});det.appendChild(el("summary",{},"evidence"));
  var et=el("table");(v.evidence||[]).forEach(function(p){var r=el("tr");r.appendChild(el("td",{},p[0]));
    r.appendChild(el("td",{"class":"num"},p[1]));et.appendChild(r);});
  det.appendChild(et);td.appendChild(det);tr.appendChild(td);
  tr.appendChild(el("td",{"class":"num"},Number(d.hot_loop_score||0).toFixed(2)));
  tr.appendChild(el("td",{"class":"num"},Number(d.contention_score||0).toFixed(2)));
  tb.appendChild(tr);});
if(!(R.decisions||[]).length)row(tb,[["no decisions: nothing crossed the thresholds","note"]]);

// flame graph (icicle: outermost frames on top); click zooms, hover tells
var fbox=document.getElementById("flame-box");
if(V.flame&&V.flame.a>0){
  var key="a", zoom=[V.flame];
  var ctl=el("div",{id:"flame-controls"});
  var reset=el("button",{type:"button",id:"flame-reset"},"reset zoom");
  var sel=el("select",{id:"flame-key"});
  sel.appendChild(el("option",{value:"a"},"all samples (wall)"));sel.appendChild(el("option",{value:"r"},"samples on a CPU"));
  var lab=el("label",{},"weight: ");lab.appendChild(sel);ctl.appendChild(reset);ctl.appendChild(lab);
  var info=el("span",{id:"flame-info","class":"meta"},"");ctl.appendChild(info);fbox.appendChild(ctl);
  var FW=1100,RH=18;
  function depth(n){var m=0;(n.c||[]).forEach(function(c){m=Math.max(m,depth(c));});return m+1;}
  var fsvg=sv("svg",{id:"flame","class":"plot flame",width:FW,viewBox:"0 0 "+FW+" 10"});fbox.appendChild(fsvg);
  function color(n){var h=0;for(var i=0;i<n.n.length;i++)h=(h*31+n.n.charCodeAt(i))%360;
    return n.f?"hsl("+(10+h%40)+",75%,"+(58+h%18)+"%)":"hsl(220,20%,80%)";}
  function draw(){
    while(fsvg.firstChild)fsvg.removeChild(fsvg.firstChild);
    var root=zoom[zoom.length-1], total=root[key]||0, d=depth(root);
    fsvg.setAttribute("height",d*RH+2);fsvg.setAttribute("viewBox","0 0 "+FW+" "+(d*RH+2));
    info.textContent=(zoom.length>1?"zoomed into "+root.n+" \u00b7 ":"")+num(total)+" samples";
    function node(n,x,w,lev){
      if(w<0.4||!(n[key]>0))return;
      var g=sv("g",{});
      var r=sv("rect",{"class":"frame",x:x.toFixed(2),y:lev*RH,width:Math.max(w-0.3,0.3).toFixed(2),height:RH-1,fill:color(n)});
      var all=V.flame[key]||1;
      r.appendChild(sv("title",{},n.n+(n.f?" ("+n.f+")":"")+": "+num(n[key])+" samples, "+pct(n[key]/all)+" of all"+
        (zoom.length>1?", "+pct(n[key]/(total||1))+" of the zoomed node":"")));
      r.addEventListener("click",function(){if(n!==root){zoom.push(n);draw();}});
      g.appendChild(r);
      if(w>28){var chars=Math.floor((w-6)/6.2);var label=n.n.length>chars?n.n.slice(0,Math.max(chars-1,1))+"\u2026":n.n;
        g.appendChild(sv("text",{x:(x+3).toFixed(2),y:lev*RH+12.5},label));}
      fsvg.appendChild(g);
      var cx=x;(n.c||[]).forEach(function(c){var cw=w*(c[key]||0)/(n[key]||1);node(c,cx,cw,lev+1);cx+=cw;});
    }
    node(root,0,FW,0);
  }
  reset.addEventListener("click",function(){zoom=[V.flame];draw();});
  sel.addEventListener("change",function(){key=sel.value;zoom=[V.flame];draw();});
  // a link can open the graph zoomed: report.html#zoom=FUNCTION (the first node of that name, depth first)
  var hz=/^#zoom=(.+)$/.exec(location.hash||"");
  if(hz){var want=decodeURIComponent(hz[1]);
    (function find(n,trail){if(n.n===want){zoom=trail.concat([n]);return true;}
      return (n.c||[]).some(function(c){return find(c,trail.concat([n]));});})(V.flame,[]);}
  draw();
} else fbox.appendChild(el("div",{"class":"note"},"this session kept no sampled call stacks"));

// top loops / waits
var ents=R.entities||[];
function m(e){return e.measurements||{};}
var loops=ents.filter(function(e){return (e.kind==="loop"||e.kind==="function")&&(m(e).cpu_share||m(e).iterations);})
  .sort(function(a,b){return (m(b).cpu_share||0)-(m(a).cpu_share||0);}).slice(0,15);
var lt=document.querySelector("#loops tbody");
loops.forEach(function(e){row(lt,[[e.kind],[e.function],[where(e),"",e.file],[pct(m(e).cpu_share),"num"],
  [num(m(e).iterations_per_s),"num"],[(e.threads||[]).length,"num"]]);});
var waits=ents.filter(function(e){return (e.kind==="lock"||e.kind==="wait")&&(m(e).wait_s_total||m(e).samples_waiting);})
  .sort(function(a,b){return (m(b).wait_s_total||0)-(m(a).wait_s_total||0);}).slice(0,15);
var wt=document.querySelector("#waits tbody");
waits.forEach(function(e){row(wt,[[e.kind+(e.detail?" ["+e.detail+"]":"")],[e.function],[where(e),"",e.file],
  [secs(m(e).wait_s_total),"num"],[secs(m(e).wait_s_mean),"num"],[num(m(e).waits),"num"],[m(e).waiting_threads||0,"num"]]);});

// bar chart
function bars(values, cls, title, color, mark){
  var W=300,H=110,P=18,n=values.length,mx=Math.max.apply(null,values.map(Number).concat([1e-12]));
  var s=sv("svg",{"class":"plot "+cls,width:W,height:H,viewBox:"0 0 "+W+" "+H,role:"img"});
  s.appendChild(sv("title",{},title));
  s.appendChild(sv("text",{x:2,y:10},title));
  var bw=(W-4)/n;
  values.forEach(function(v,i){var h=(H-P-14)*Number(v)/mx;
    var r=sv("rect",{x:(2+i*bw).toFixed(2),y:(H-P-h).toFixed(2),width:Math.max(bw-0.6,0.5).toFixed(2),height:h.toFixed(2),
      fill:(mark===i?"#b3261e":color),"class":"bar"});r.appendChild(sv("title",{},i+": "+num(v)));s.appendChild(r);});
  s.appendChild(sv("line",{x1:2,x2:W-2,y1:H-P,y2:H-P,stroke:"#8a90a0"}));
  s.appendChild(sv("text",{x:2,y:H-4},"0"));s.appendChild(sv("text",{x:W-16,y:H-4},String(n-1)));
  return s;}
var plots=document.getElementById("plots"), shown=0;
ents.slice(0,24).forEach(function(e){
  var sl=e.slcp||{};var box=el("div",{"class":"entity"});
  box.appendChild(el("h3",{},e.kind+" "+e.function+" ("+where(e)+")"));
  box.appendChild(el("div",{"class":"meta"},"chi6 "+(sl.chi6===undefined?"-":sl.chi6)+" \u00b7 shell "+
    (sl.shell===undefined?"-":sl.shell)+" \u00b7 resonance_key "+(sl.resonance_key===undefined?"-":sl.resonance_key)));
  var any=false;
  if(Array.isArray(sl.chi_hist64)&&sl.chi_hist64.length){box.appendChild(bars(sl.chi_hist64,"chi","chirality histogram (64)","#4a6fa5",sl.chi6));any=true;}
  if(Array.isArray(sl.spectral64)&&sl.spectral64.length){box.appendChild(bars(sl.spectral64,"spectrum","spectrum (64)","#6a9f58"));any=true;}
  if(!any)box.appendChild(el("div",{"class":"note"},"no histogram / spectrum recorded for this entity"));
  else shown++;
  plots.appendChild(box);});
if(!ents.length)plots.appendChild(el("div",{"class":"note"},"no entities"));

// per-thread timeline of waits
var tl=R.timeline||[], tdiv=document.getElementById("timeline-box");
if(tl.length){
  var names={};(R.processes||[]).forEach(function(p){(p.threads||[]).forEach(function(t){names[t.id]=t.name;});});
  var tids=[];tl.forEach(function(w){if(tids.indexOf(w.thread)<0)tids.push(w.thread);});
  var end=Math.max(Number(R.duration_s||0),Math.max.apply(null,tl.map(function(w){return Number(w.start_s)+Number(w.duration_s);})));
  var LW=150,W=900,RH=18,H=tids.length*RH+24;
  var s=sv("svg",{id:"timeline","class":"plot timeline",width:W,height:H,viewBox:"0 0 "+W+" "+H});
  s.appendChild(sv("title",{},"waits per thread"));
  tids.forEach(function(t,i){s.appendChild(sv("text",{x:2,y:i*RH+13},(names[t]||"thread")+" ("+t+")"));
    s.appendChild(sv("line",{x1:LW,x2:W-4,y1:i*RH+RH/2,y2:i*RH+RH/2,stroke:"#e3e5ea"}));});
  var sc=(W-LW-6)/(end||1);
  var byId={};ents.forEach(function(e){byId[e.id]=e;});
  var tdet=el("div",{id:"timeline-detail","class":"meta"},"hover or click a wait to see what the thread waited on");
  function waitText(w){var e=byId[w.entity_id];
    var what=e?(e.kind+(e.detail?" ["+e.detail+"]":"")+" in "+e.function+" ("+where(e)+")"):("entity "+w.entity_id);
    return (names[w.thread]||"thread")+" ("+w.thread+") waited "+secs(w.duration_s)+" on the "+what+" at "+
      Number(w.start_s).toFixed(3)+"s";}
  tl.forEach(function(w){var i=tids.indexOf(w.thread);var e=byId[w.entity_id]||{};
    // a wait that began before the session (attach) is drawn from 0, never over the thread labels
    var x0=Math.max(0,Number(w.start_s)), x1=Math.max(x0,Number(w.start_s)+Number(w.duration_s));
    var r=sv("rect",{"class":"wait",x:(LW+sc*x0).toFixed(2),y:i*RH+3,
    width:Math.max(sc*(x1-x0),1).toFixed(2),height:RH-6,fill:e.kind==="lock"?"#1f5fbf":"#8a90a0"});
    r.appendChild(sv("title",{},waitText(w)));
    r.addEventListener("click",function(){tdet.textContent=waitText(w);});
    r.addEventListener("mouseenter",function(){tdet.textContent=waitText(w);});
    s.appendChild(r);});
  s.appendChild(sv("text",{x:LW,y:H-4},"0s"));s.appendChild(sv("text",{x:W-40,y:H-4},end.toFixed(2)+"s"));
  tdiv.appendChild(s);tdiv.appendChild(tdet);
} else tdiv.appendChild(el("div",{"class":"note"},"this session has no wait timeline"));
document.body.setAttribute("data-rendered","1");
})();
"""


def _json_for_script(doc: Any) -> str:
    text = json.dumps(doc, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_views(result: dict[str, Any]) -> dict[str, Any]:
    """What the page needs beyond the result: per decision its sentence, hottest call path, sampled
    lines (with source text when the file is readable here) and evidence pairs; the flame graph tree.
    Tolerant: a missing or malformed profile gives sentences without paths and no flame graph."""
    from gyroscope.agent.decision_text import decision_sentence, evidence_pairs
    from gyroscope.agent.profiles.flame import flame_tree
    from gyroscope.agent.profiles.paths import hottest_path, line_shares, path_text, source_lines
    from gyroscope.agent.profiles.store import store_from_result

    try:
        store = store_from_result(result)
    except ValueError:
        store = None
    views: dict[str, Any] = {"decisions": [], "flame": flame_tree(store) if store is not None and store.rows else None}
    for d in result.get("decisions") or []:
        path = hottest_path(store, d) if store is not None else None
        v: dict[str, Any] = {"sentence": decision_sentence(d, path), "evidence": evidence_pairs(d)}
        if path is not None:
            v.update(path=path_text(path, max_frames=8), path_share=path.share, path_samples=path.place_samples)
        if store is not None and d.get("entity_kind") in ("loop", "function"):
            shares = line_shares(store, d)[:40]
            if shares:
                nums = [s["line"] for s in shares] + [int(d.get("line", 0) or 0)]
                text = source_lines(str(d.get("file", "")), [n for n in nums if n > 0])
                by_line = {s["line"]: s for s in shares}
                lo, hi = min(n for n in nums if n > 0), max(nums)
                lines = []
                for n in range(lo, hi + 1) if hi - lo <= 60 else sorted(by_line):
                    s = by_line.get(n, {"line": n, "samples": 0, "share": 0.0})
                    lines.append({**s, "text": text.get(n, "")} if text else dict(s))
                v["lines"] = lines
        views["decisions"].append(v)
    return views


def render_html(result: dict[str, Any]) -> str:
    """The report as one HTML string (no external resources)."""
    views = report_views(result)
    result = {k: v for k, v in result.items() if k != "profile"}
    e = html.escape
    cmd = " ".join(str(c) for c in result.get("command") or [])
    c = result.get("counters") or {}
    errors = result.get("errors") or []
    counters = " · ".join(f"{k} {v}" for k, v in c.items())
    otlp = (result.get("export") or {}).get("otlp")
    if otlp:
        counters += (f" · otlp {otlp.get('spans', 0)} spans, {otlp.get('logs', 0)} logs, "
                     f"{otlp.get('dropped', 0)} dropped, {otlp.get('failed', 0)} failed")
    err_html = ("<h2>Errors</h2><ul class=\"errors\">" + "".join(f"<li>{e(str(x))}</li>" for x in errors[:50])
                + "</ul>") if errors else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gyroscope report: {e(cmd)}</title>
<style>{_CSS}</style></head>
<body>
<h1>gyroscope report</h1>
<div class="meta">{e(str(result.get('source', '')))}: <code>{e(cmd)}</code> · pid {e(str(result.get('pid', '')))}
 · {float(result.get('duration_s', 0) or 0):.2f}s · {e(str(result.get('windows', 0)))} windows
 · exit code {e(str(result.get('exit_code')))} · Python {e(str(result.get('python', '')))}</div>
<div class="meta" id="counters">{e(counters)} · errors {len(errors)}</div>
<h2>Decisions</h2>
<table id="decisions"><thead><tr><th>action</th><th>decision</th><th>hot</th><th>contention</th></tr></thead>
<tbody></tbody></table>
<h2>Top loops</h2>
<table id="loops"><thead><tr><th>kind</th><th>function</th><th>where</th><th>cpu share</th><th>iterations/s</th>
<th>threads</th></tr></thead><tbody></tbody></table>
<h2>Top waits</h2>
<table id="waits"><thead><tr><th>kind</th><th>function</th><th>where</th><th>wait total</th><th>wait mean</th>
<th>waits</th><th>waiting threads</th></tr></thead><tbody></tbody></table>
<h2>Where the time goes (flame graph of the sampled call stacks)</h2>
<div id="flame-box"></div>
<h2>Waits per thread</h2>
<div id="timeline-box"></div>
<h2>Chirality histograms and spectra</h2>
<div id="plots"></div>
{err_html}
<noscript><p>This report draws its tables and plots with inline JavaScript; enable it to see them.</p></noscript>
<script type="application/json" id="gyroscope-data">{_json_for_script(result)}</script>
<script type="application/json" id="gyroscope-views">{_json_for_script(views)}</script>
<script>{_JS}</script>
</body></html>
"""
