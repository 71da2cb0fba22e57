"""One self-contained HTML report of a session: inline CSS, JS and SVG; no CDN, works offline.

The session result is embedded as JSON (<script type="application/json" id="gyroscope-data">)
and rendered in the browser by the inline script below:
  - the decisions table (#decisions tbody, one <tr class="decision"> per decision);
  - per entity, a chirality histogram and a spectrum (SVG bar charts, class "plot chi" /
    "plot spectrum") from entity["slcp"]["chi_hist64"] / ["spectral64"] when present, else a
    note saying the session did not record them;
  - top loops and top waits tables;
  - a per-thread timeline of waits (SVG, id "timeline") from result["timeline"]
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

// decisions
var tb=document.querySelector("#decisions tbody");
(R.decisions||[]).forEach(function(d){
  var cls=d.action==="specialize_hot_loop"?"hot":(d.action==="mitigate_contention"?"cont":"obs");
  row(tb,[[d.action,cls],[d.entity_kind],[d.function],[where(d),"",d.file],[Number(d.hot_loop_score||0).toFixed(2),"num"],
          [Number(d.contention_score||0).toFixed(2),"num"],[evidence(d.evidence)]],"decision");});
if(!(R.decisions||[]).length)row(tb,[["no decisions: nothing crossed the thresholds","note"]]);

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
  tl.forEach(function(w){var i=tids.indexOf(w.thread);var r=sv("rect",{"class":"wait",x:(LW+sc*w.start_s).toFixed(2),y:i*RH+3,
    width:Math.max(sc*w.duration_s,1).toFixed(2),height:RH-6,fill:"#1f5fbf"});
    r.appendChild(sv("title",{},"entity "+w.entity_id+": "+secs(w.duration_s)+" at "+Number(w.start_s).toFixed(3)+"s"));s.appendChild(r);});
  s.appendChild(sv("text",{x:LW,y:H-4},"0s"));s.appendChild(sv("text",{x:W-40,y:H-4},end.toFixed(2)+"s"));
  tdiv.appendChild(s);
} else tdiv.appendChild(el("div",{"class":"note"},"this session has no wait timeline"));
document.body.setAttribute("data-rendered","1");
})();
"""


def _json_for_script(doc: Any) -> str:
    text = json.dumps(doc, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(result: dict[str, Any]) -> str:
    """The report as one HTML string (no external resources)."""
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
<table id="decisions"><thead><tr><th>action</th><th>kind</th><th>function</th><th>where</th><th>hot</th>
<th>contention</th><th>evidence</th></tr></thead><tbody></tbody></table>
<h2>Top loops</h2>
<table id="loops"><thead><tr><th>kind</th><th>function</th><th>where</th><th>cpu share</th><th>iterations/s</th>
<th>threads</th></tr></thead><tbody></tbody></table>
<h2>Top waits</h2>
<table id="waits"><thead><tr><th>kind</th><th>function</th><th>where</th><th>wait total</th><th>wait mean</th>
<th>waits</th><th>waiting threads</th></tr></thead><tbody></tbody></table>
<h2>Waits per thread</h2>
<div id="timeline-box"></div>
<h2>Chirality histograms and spectra</h2>
<div id="plots"></div>
{err_html}
<noscript><p>This report draws its tables and plots with inline JavaScript; enable it to see them.</p></noscript>
<script type="application/json" id="gyroscope-data">{_json_for_script(result)}</script>
<script>{_JS}</script>
</body></html>
"""
