"use strict";
// A browser WebRTC client for the relay's `udp` DataChannel (PROTOCOL.md sections 2 and 5), written for
// the e2e tests and the WebRTC benchmark. Frames are built with window.AeroUdp (udp_relay.js).
//
// Loopback only: the page never signals a candidate, or an SDP connection address, that names one of the
// machine's real interfaces. Chromium hides its host addresses behind mDNS names (`<uuid>.local`) and has
// no loopback candidate of its own, so by default nothing at all is signaled: the relay offers only
// 127.0.0.1, Chromium's checks toward it come from 127.0.0.1, and the relay learns Chromium's address as
// a peer-reflexive candidate. `signal: "mdns"` also sends the `.local` candidates (they carry no
// address; the relay must drop them without breaking ICE). Everything sent is kept in `sentTexts` so
// the tests can check it.
(() => {
  const UDP_CHANNEL = { ordered: false, maxRetransmits: 0 };

  // --- candidates and SDP ------------------------------------------------------------------------

  // "candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ..."
  function parseCandidate(text) {
    const parts = text.replace(/^a=/, "").replace(/^candidate:/, "").trim().split(/\s+/);
    const typ = parts.indexOf("typ");
    return {
      transport: (parts[2] || "").toLowerCase(),
      address: parts[4] || "",
      port: Number(parts[5]),
      type: typ >= 0 ? parts[typ + 1] : "",
    };
  }

  function isLoopback(address) {
    return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address) || address === "::1";
  }

  // "loopback", "mdns" or "other" (a real interface address, or anything we cannot vouch for).
  function candidateClass(text) {
    const { address } = parseCandidate(text);
    if (isLoopback(address)) return "loopback";
    if (/\.local\.?$/i.test(address)) return "mdns";
    return "other";
  }

  function allowedBy(policy, cls) {
    return cls === "loopback" || (policy === "mdns" && cls === "mdns");
  }

  // The SDP with only the allowed candidate lines and with connection addresses other than loopback
  // or the unspecified address replaced by 0.0.0.0 (for a non-trickle offer after gathering).
  function sanitizeSdp(sdp, policy, withheld) {
    const out = [];
    for (const line of sdp.split(/\r\n/)) {
      if (line.startsWith("a=candidate:")) {
        const cls = candidateClass(line);
        if (!allowedBy(policy, cls)) {
          withheld.push({ candidate: line.slice(2), cls });
          continue;
        }
      } else if (/^c=IN IP[46] /.test(line)) {
        const addr = line.split(" ")[2];
        if (!isLoopback(addr) && addr !== "0.0.0.0" && addr !== "::") {
          withheld.push({ connection: line, cls: "other" });
          out.push("c=IN IP4 0.0.0.0");
          continue;
        }
      }
      out.push(line);
    }
    return out.join("\r\n");
  }

  function sdpCandidates(sdp) {
    return sdp
      .split(/\r\n/)
      .filter((l) => l.startsWith("a=candidate:"))
      .map((l) => l.slice(2));
  }

  // --- an event queue with timed reads --------------------------------------------------------------

  class Queue {
    constructor() {
      this.items = [];
      this.waiters = [];
    }

    push(item) {
      const waiter = this.waiters.shift();
      if (waiter) waiter(item);
      else this.items.push(item);
    }

    next(timeoutMs = 5000) {
      if (this.items.length) return Promise.resolve(this.items.shift());
      return new Promise((resolve) => {
        const waiter = (item) => {
          clearTimeout(timer);
          resolve(item);
        };
        const timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve({ kind: "timeout" });
        }, timeoutMs);
        this.waiters.push(waiter);
      });
    }
  }

  function withTimeout(promise, ms, value) {
    let timer;
    return Promise.race([
      promise.finally(() => clearTimeout(timer)),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(value), ms);
      }),
    ]);
  }

  // --- one session ----------------------------------------------------------------------------------

  // One RTCPeerConnection with a `udp` DataChannel. `messages` holds DataChannel events ({kind:
  // "binary", hex, frame} and {kind: "dc-close"}), `signals` the relay's signaling messages ({kind:
  // "json", json} and {kind: "ws-close", code, reason}). `opened` settles true when the channel opens
  // and false if it closes first.
  class RtcSession {
    constructor(opts = {}) {
      this.t0 = performance.now();
      this.tOpen = null;
      this.marks = {}; // ms since t0 of each negotiation step (for the benchmark's breakdown)
      this.policy = opts.signal || "loopback";
      this.messages = new Queue();
      this.signals = new Queue();
      this.sentTexts = [];
      this.candidates = { gathered: [], signaled: [], withheld: [], remote: [] };
      this.states = [];
      this.errors = [];
      this.ws = null;
      this.http = null;
      this.sessionId = null;
      this.pc = new RTCPeerConnection({ iceServers: [] }); // never a STUN server: nothing leaves loopback
      this.dc = this.pc.createDataChannel(opts.label || "udp", opts.channel || UDP_CHANNEL);
      this.dc.binaryType = "arraybuffer";
      this.onBinary = null; // the benchmark loops take over the message path
      this.started = null; // set by AeroRtc.signal / AeroRtc.http: resolves once the offer is out
      // Settles once: true on channel open; false when the channel, the signaling socket or the HTTP
      // offer fails first.
      this.opened = new Promise((resolve) => {
        this.settleOpened = resolve;
      });
      this.dc.addEventListener("open", () => {
        this.tOpen = performance.now();
        this.settleOpened(true);
      });
      this.dc.addEventListener("close", () => this.settleOpened(false));
      this.dc.addEventListener("message", (ev) => {
        if (this.onBinary) {
          this.onBinary(ev.data);
          return;
        }
        if (typeof ev.data === "string") {
          this.messages.push({ kind: "text", text: ev.data });
          return;
        }
        const bytes = new Uint8Array(ev.data);
        this.messages.push({ kind: "binary", hex: AeroUdp.toHex(bytes), frame: AeroUdp.describe(bytes) });
      });
      this.dc.addEventListener("close", () => this.messages.push({ kind: "dc-close" }));
      this.pc.addEventListener("connectionstatechange", () => this.states.push(this.pc.connectionState));
    }

    // --- /webrtc/signal (trickle) ---

    async startSignal(url, auth) {
      this.ws = new WebSocket(url);
      const outbox = [];
      let offerSent = false;
      const send = (obj) => {
        const text = JSON.stringify(obj);
        this.sentTexts.push(text);
        this.ws.send(text);
      };
      // Candidates may be gathered before the socket opens or the offer is out: queue them until then.
      this.pc.addEventListener("icecandidate", (ev) => {
        const c = ev.candidate;
        if (!c || !c.candidate) return; // end of candidates: nothing to say
        const cls = candidateClass(c.candidate);
        this.candidates.gathered.push({ candidate: c.candidate, cls });
        if (!allowedBy(this.policy, cls)) {
          this.candidates.withheld.push({ candidate: c.candidate, cls });
          return;
        }
        const msg = { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex };
        if (c.usernameFragment) msg.usernameFragment = c.usernameFragment;
        this.candidates.signaled.push(c.candidate);
        if (offerSent) send({ type: "candidate", candidate: msg });
        else outbox.push({ type: "candidate", candidate: msg });
      });
      let chain = Promise.resolve(); // the relay's messages are applied one after another
      this.ws.addEventListener("message", (ev) => {
        let json = null;
        try {
          json = JSON.parse(ev.data);
        } catch (_) {
          json = null;
        }
        this.signals.push({ kind: "json", json });
        chain = chain.then(() => this._applySignal(json)).catch((err) => this.errors.push(String(err)));
      });
      this.ws.addEventListener("close", (ev) => {
        this.signals.push({ kind: "ws-close", code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
        this.settleOpened(false);
      });
      const wsOpen = new Promise((resolve) => {
        this.ws.addEventListener("open", () => resolve(true));
        this.ws.addEventListener("close", () => resolve(false));
      });
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      this.mark("localDescription");
      if (!(await wsOpen)) return false;
      this.mark("wsOpen");
      if (auth) send({ type: "auth", ...auth });
      const withheld = [];
      send({ type: "offer", sdp: { type: "offer", sdp: sanitizeSdp(offer.sdp, this.policy, withheld) } });
      this.candidates.withheld.push(...withheld);
      offerSent = true;
      for (const m of outbox.splice(0)) send(m);
      return true;
    }

    async _applySignal(msg) {
      if (!msg || typeof msg !== "object") return;
      if (msg.type === "answer") {
        this.mark("answer");
        await this.pc.setRemoteDescription(msg.sdp);
        this.candidates.remote.push(...sdpCandidates(msg.sdp.sdp));
      } else if (msg.type === "candidate") {
        this.candidates.remote.push(msg.candidate.candidate);
        await this.pc.addIceCandidate(msg.candidate);
      }
    }

    // --- POST /webrtc/offer and POST /offer (non-trickle) ---

    async startHttp(url, kind, headers = {}) {
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      const gathered = new Promise((resolve) => {
        if (this.pc.iceGatheringState === "complete") resolve(true);
        this.pc.addEventListener("icegatheringstatechange", () => {
          if (this.pc.iceGatheringState === "complete") resolve(true);
        });
      });
      this.mark("localDescription");
      await withTimeout(gathered, 3000, false);
      this.mark("gathered");
      const local = this.pc.localDescription.sdp;
      for (const c of sdpCandidates(local)) this.candidates.gathered.push({ candidate: c, cls: candidateClass(c) });
      const sdp = sanitizeSdp(local, this.policy, this.candidates.withheld);
      this.candidates.signaled.push(...sdpCandidates(sdp));
      const desc = { type: "offer", sdp };
      const body = JSON.stringify(kind === "offer" ? { version: 1, offer: desc } : { sdp: desc });
      this.sentTexts.push(body);
      const resp = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...headers },
        body,
      });
      const text = await resp.text();
      this.mark("answer");
      let json = null;
      try {
        json = JSON.parse(text);
      } catch (_) {
        json = null;
      }
      this.http = { status: resp.status, json, text };
      if (!resp.ok || !json) {
        this.settleOpened(false);
        return false;
      }
      const answer = kind === "offer" ? json.answer : json.sdp;
      if (kind !== "offer") this.sessionId = json.sessionId;
      this.candidates.remote.push(...sdpCandidates(answer.sdp));
      await this.pc.setRemoteDescription(answer);
      return true;
    }

    // --- use ---

    // True once the channel is open; false if it closes first or does not open within timeoutMs.
    async waitOpen(timeoutMs) {
      if (this.started && !(await this.started)) return false;
      return withTimeout(this.opened, timeoutMs, false);
    }

    mark(name) {
      if (!(name in this.marks)) this.marks[name] = performance.now() - this.t0;
    }

    connectMs() {
      return this.tOpen === null ? null : this.tOpen - this.t0;
    }

    send(bytes) {
      this.dc.send(bytes);
    }

    // The selected candidate pair from getStats(), with both candidates' address, port and type.
    async selectedPair() {
      const stats = await this.pc.getStats();
      let pair = null;
      stats.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
      });
      if (!pair) {
        stats.forEach((s) => {
          if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
        });
      }
      if (!pair) return null;
      const cand = (id) => {
        const c = stats.get(id) || {};
        return {
          address: c.address ?? c.ip ?? null,
          port: c.port ?? null,
          candidateType: c.candidateType ?? null,
          protocol: c.protocol ?? null,
          networkType: c.networkType ?? null,
        };
      };
      return {
        state: pair.state,
        nominated: !!pair.nominated,
        bytesSent: pair.bytesSent ?? 0,
        bytesReceived: pair.bytesReceived ?? 0,
        local: cand(pair.localCandidateId),
        remote: cand(pair.remoteCandidateId),
      };
    }

    summary() {
      return {
        connectMs: this.connectMs(),
        marks: this.marks,
        candidates: this.candidates,
        sentTexts: this.sentTexts,
        states: this.states,
        errors: this.errors,
        http: this.http,
        sessionId: this.sessionId,
        dcState: this.dc.readyState,
        pcState: this.pc.connectionState,
      };
    }

    close() {
      this.onBinary = null;
      try {
        this.dc.close();
      } catch (_) {
        /* already closed */
      }
      this.pc.close();
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    }
  }

  // --- benchmark loops (everything per datagram stays in the page) --------------------------------

  // A v1 frame to (ip, port) whose payload starts with a 32-bit sequence number; `stamp(seq)` rewrites it
  // in place (dc.send copies the bytes).
  function seqFrame(ip, port, payloadBytes, guestPort = 10000) {
    const frame = AeroUdp.encodeV1(guestPort, ip, port, new Uint8Array(payloadBytes));
    const view = new DataView(frame.buffer);
    return { frame, stamp: (seq) => view.setUint32(8, seq) };
  }

  function seqOf(data) {
    return new DataView(data, 8, 4).getUint32(0);
  }

  function percentile(sorted, q) {
    if (!sorted.length) return null;
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
  }

  // Keeps `window` echoes outstanding; a frame unanswered after 1 s counts as lost and frees its slot.
  class EchoLoop {
    constructor(session, ip, port, payload, window) {
      this.s = session;
      this.window = window;
      this.f = seqFrame(ip, port, payload);
      this.seq = 0;
      this.outstanding = new Map();
      this.replies = 0;
      this.lost = 0;
      this.rtts = [];
      this.recordRtts = false;
      this.stopped = false;
      session.onBinary = (data) => this.onReply(data);
      this.sweeper = setInterval(() => this.sweep(), 100);
      this.fill();
    }

    fill() {
      const dc = this.s.dc;
      while (!this.stopped && this.outstanding.size < this.window && dc.readyState === "open") {
        this.f.stamp(this.seq);
        this.outstanding.set(this.seq, performance.now());
        this.seq += 1;
        dc.send(this.f.frame);
      }
    }

    onReply(data) {
      const sent = this.outstanding.get(seqOf(data));
      if (sent === undefined) return;
      this.outstanding.delete(seqOf(data));
      this.replies += 1;
      if (this.recordRtts) this.rtts.push(performance.now() - sent);
      this.fill();
    }

    sweep() {
      const old = performance.now() - 1000;
      for (const [seq, t] of this.outstanding) {
        if (t < old) {
          this.outstanding.delete(seq);
          this.lost += 1;
        }
      }
      this.fill();
    }

    mark() {
      return { t: performance.now(), sent: this.seq, replies: this.replies, lost: this.lost };
    }

    stop() {
      this.stopped = true;
      clearInterval(this.sweeper);
      this.s.onBinary = null;
      const rtts = this.rtts.slice().sort((a, b) => a - b);
      return { ...this.mark(), rttP50Ms: percentile(rtts, 0.5), rttP99Ms: percentile(rtts, 0.99) };
    }
  }

  // Sends as fast as the channel takes them, keeping bufferedAmount under `highWater`.
  class UploadLoop {
    constructor(session, ip, port, payload, highWater = 256 * 1024) {
      this.s = session;
      this.f = seqFrame(ip, port, payload);
      this.seq = 0;
      this.stopped = false;
      this.highWater = highWater;
      const dc = session.dc;
      dc.bufferedAmountLowThreshold = highWater / 2;
      this.onLow = () => this.pump();
      dc.addEventListener("bufferedamountlow", this.onLow);
      this.ticker = setInterval(() => this.pump(), 5);
      this.pump();
    }

    pump() {
      const dc = this.s.dc;
      while (!this.stopped && dc.readyState === "open" && dc.bufferedAmount < this.highWater) {
        this.f.stamp(this.seq);
        this.seq += 1;
        dc.send(this.f.frame);
      }
    }

    mark() {
      return { t: performance.now(), sent: this.seq, buffered: this.s.dc.bufferedAmount };
    }

    stop() {
      this.stopped = true;
      clearInterval(this.ticker);
      this.s.dc.removeEventListener("bufferedamountlow", this.onLow);
      return this.mark();
    }
  }

  // Many sessions, each sending `pps` echo requests a second (paced on one 10 ms ticker).
  class PacedLoop {
    constructor(sessions, ip, port, payload, pps) {
      this.sessions = sessions;
      this.pps = pps;
      this.f = seqFrame(ip, port, payload);
      this.sent = 0;
      this.replies = 0;
      this.owed = 0;
      this.seq = 0;
      this.rtts = [];
      this.recordRtts = false;
      this.sentAt = new Map();
      this.last = performance.now();
      for (const s of sessions) {
        s.onBinary = (data) => {
          this.replies += 1;
          if (this.recordRtts) {
            const t = this.sentAt.get(seqOf(data));
            if (t !== undefined) this.rtts.push(performance.now() - t);
          }
        };
      }
      this.ticker = setInterval(() => this.tick(), 10);
    }

    tick() {
      const now = performance.now();
      this.owed += ((now - this.last) / 1000) * this.pps;
      this.last = now;
      const n = Math.floor(this.owed);
      this.owed -= n;
      for (let i = 0; i < n; i++) {
        for (const s of this.sessions) {
          if (s.dc.readyState !== "open") continue;
          this.f.stamp(this.seq);
          if (this.recordRtts && this.seq % 16 === 0) this.sentAt.set(this.seq, now);
          this.seq = (this.seq + 1) >>> 0;
          s.dc.send(this.f.frame);
          this.sent += 1;
        }
      }
    }

    mark() {
      return { t: performance.now(), sent: this.sent, replies: this.replies };
    }

    stop() {
      clearInterval(this.ticker);
      for (const s of this.sessions) s.onBinary = null;
      const rtts = this.rtts.slice().sort((a, b) => a - b);
      return { ...this.mark(), rttP50Ms: percentile(rtts, 0.5), rttP99Ms: percentile(rtts, 0.99) };
    }
  }

  // --- registry -------------------------------------------------------------------------------------

  const sessions = new Map();
  const loops = new Map();
  let nextId = 1;

  function register(map, obj) {
    const id = nextId++;
    map.set(id, obj);
    return id;
  }

  function lookup(map, id) {
    const obj = map.get(id);
    if (!obj) throw new Error(`no such id ${id}`);
    return obj;
  }

  window.AeroRtc = {
    UDP_CHANNEL,
    parseCandidate,
    candidateClass,
    sanitizeSdp,
    RtcSession,
    // Start a session; returns its id at once (connect with `session(id).opened`).
    signal(url, opts = {}) {
      const s = new RtcSession(opts);
      const id = register(sessions, s);
      s.started = s.startSignal(url, opts.auth || null).catch((err) => {
        s.errors.push(String(err));
        s.settleOpened(false);
        return false;
      });
      return id;
    },
    http(url, kind, opts = {}) {
      const s = new RtcSession(opts);
      const id = register(sessions, s);
      s.started = s.startHttp(url, kind, opts.headers || {}).catch((err) => {
        s.errors.push(String(err));
        s.settleOpened(false);
        return false;
      });
      return id;
    },
    session(id) {
      return lookup(sessions, id);
    },
    drop(id) {
      const s = sessions.get(id);
      if (s) s.close();
      sessions.delete(id);
    },
    startEcho(id, ip, port, payload, window) {
      return register(loops, new EchoLoop(lookup(sessions, id), ip, port, payload, window));
    },
    startUpload(id, ip, port, payload) {
      return register(loops, new UploadLoop(lookup(sessions, id), ip, port, payload));
    },
    startPaced(ids, ip, port, payload, pps) {
      return register(loops, new PacedLoop(ids.map((i) => lookup(sessions, i)), ip, port, payload, pps));
    },
    loop(id) {
      return lookup(loops, id);
    },
    stopLoop(id) {
      const l = lookup(loops, id);
      loops.delete(id);
      return l.stop();
    },
  };
})();
