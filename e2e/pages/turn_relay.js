"use strict";
// WebRTC through TURN for e2e/test_turn_browser.py (PROTOCOL.md sections 2 and 5). Loaded on top of
// index.html, whose scripts provide window.AeroUdp (frame codec) and window.AeroRtc (the `udp`
// DataChannel session over /webrtc/signal, webrtc_relay.js). This file adds what TURN needs: ICE
// gathering on its own (to see refused credentials), sessions with a caller-given RTCConfiguration
// (relay-only policy), and the selected pair's relay details from getStats().
(() => {
  function describeCandidate(c) {
    return {
      type: c.type,
      protocol: c.protocol,
      address: c.address,
      port: c.port,
      relatedAddress: c.relatedAddress,
      relatedPort: c.relatedPort,
      url: c.url || null,
    };
  }

  // Gathers with `config` (no signaling) and returns every candidate, every icecandidateerror and
  // whether gathering reached its end (the null candidate) within timeoutMs.
  async function gather(config, timeoutMs = 8000) {
    const pc = new RTCPeerConnection(config);
    const candidates = [];
    const errors = [];
    try {
      const complete = new Promise((resolve) => {
        pc.addEventListener("icecandidate", (ev) => {
          if (ev.candidate && ev.candidate.candidate) candidates.push(describeCandidate(ev.candidate));
          else resolve(true);
        });
        setTimeout(() => resolve(false), timeoutMs);
      });
      pc.addEventListener("icecandidateerror", (ev) => {
        errors.push({ errorCode: ev.errorCode, errorText: ev.errorText, url: ev.url, port: ev.port });
      });
      pc.createDataChannel("udp", AeroRtc.UDP_CHANNEL);
      await pc.setLocalDescription(await pc.createOffer());
      const completed = await complete;
      return { completed, gatheringState: pc.iceGatheringState, candidates, errors };
    } finally {
      pc.close();
    }
  }

  // getStats() of the transport's selected candidate pair, with the local candidate's relay fields.
  async function selectedPair(pc) {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const cand = (id) => {
      const c = stats.get(id) || {};
      return {
        candidateType: c.candidateType ?? null,
        protocol: c.protocol ?? null,
        relayProtocol: c.relayProtocol ?? null,
        address: c.address ?? c.ip ?? null,
        port: c.port ?? null,
        url: c.url ?? null,
      };
    };
    return {
      state: pair.state,
      nominated: !!pair.nominated,
      local: cand(pair.localCandidateId),
      remote: cand(pair.remoteCandidateId),
    };
  }

  const sessions = new Map();
  let nextId = 1;

  window.AeroTurn = {
    gather,
    selectedPair,
    async fetchIce(url) {
      const resp = await fetch(url, { cache: "no-store" });
      return { status: resp.status, body: await resp.json() };
    },
    // An AeroRtc session whose PeerConnection uses `config` (set before the offer, so before any
    // gathering), signaled over /webrtc/signal. Resolves to its id once the offer is out.
    async signal(url, config) {
      const s = new AeroRtc.RtcSession();
      s.pc.setConfiguration(config);
      const id = nextId++;
      sessions.set(id, s);
      if (!(await s.startSignal(url, null))) throw new Error(`signaling did not start: ${JSON.stringify(s.summary())}`);
      return id;
    },
    session(id) {
      const s = sessions.get(id);
      if (!s) throw new Error(`no session ${id}`);
      return s;
    },
    drop(id) {
      const s = sessions.get(id);
      if (s) s.close();
      sessions.delete(id);
    },
  };
})();
