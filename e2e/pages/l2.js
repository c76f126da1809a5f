"use strict";
// The `l2` DataChannel (PROTOCOL.md sections 2.3 and 9) on the PeerConnection of an AeroRtc session
// (webrtc_relay.js), and a mixed load for the e2e tests: aero-l2-tunnel-v1 messages on `l2`
// interleaved with echo datagrams on `udp`, all in flight at once. The bytes to send come from the
// test (hex) and everything received goes back as hex, so the test checks them byte for byte.
// Loaded after webrtc_relay.js (the test adds it with page.add_script_tag).
(() => {
  // Reliable and ordered: no maxRetransmits, no maxPacketLifeTime (the relay rejects anything else).
  const L2_CHANNEL = { ordered: true };

  function waitFor(promise, ms, value) {
    let timer;
    return Promise.race([
      promise.finally(() => clearTimeout(timer)),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(value), ms);
      }),
    ]);
  }

  // One `l2` channel. `received` keeps every binary message as hex, in arrival order (unless a
  // load in progress takes the message path over through `onBinary`).
  class L2Channel {
    constructor(session, opts = {}) {
      this.t0 = performance.now();
      this.dc = session.pc.createDataChannel(opts.label || "l2", opts.channel || L2_CHANNEL);
      this.dc.binaryType = "arraybuffer";
      this.received = [];
      this.texts = [];
      this.onBinary = null;
      this.openedMs = null;
      this.closedMs = null;
      this.opened = new Promise((resolve) => {
        this.dc.addEventListener("open", () => {
          this.openedMs = performance.now() - this.t0;
          resolve(true);
        });
        this.dc.addEventListener("close", () => resolve(false));
      });
      this.closed = new Promise((resolve) => {
        this.dc.addEventListener("close", () => {
          this.closedMs = performance.now() - this.t0;
          resolve(true);
        });
      });
      this.dc.addEventListener("message", (ev) => {
        if (typeof ev.data === "string") {
          this.texts.push(ev.data);
        } else if (this.onBinary) {
          this.onBinary(ev.data);
        } else {
          this.received.push(AeroUdp.toHex(new Uint8Array(ev.data)));
        }
      });
    }

    state() {
      return {
        label: this.dc.label,
        readyState: this.dc.readyState,
        ordered: this.dc.ordered,
        maxRetransmits: this.dc.maxRetransmits,
        maxPacketLifeTime: this.dc.maxPacketLifeTime,
        openedMs: this.openedMs,
        closedMs: this.closedMs,
        received: this.received.slice(),
        texts: this.texts.slice(),
      };
    }
  }

  const channels = new Map();
  let nextId = 1;

  function channel(id) {
    const c = channels.get(id);
    if (!c) throw new Error(`no such l2 channel ${id}`);
    return c;
  }

  // Sends messages[i] on `l2` and datagrams[i] on `udp` alternately (all at once, or one pair every
  // gapMs), then waits until every message got its answer on `l2` and every datagram its echo on
  // `udp`, or timeoutMs passed, or `l2` closed with answers missing. Returns what arrived, as hex in
  // arrival order.
  async function exchange(sessionId, l2Id, messagesHex, datagramsHex, opts = {}) {
    const s = AeroRtc.session(sessionId);
    const l2 = l2Id === null ? null : channel(l2Id);
    const messages = messagesHex.map((h) => AeroUdp.fromHex(h));
    const datagrams = datagramsHex.map((h) => AeroUdp.fromHex(h));
    const answers = [];
    const echoes = [];
    const t0 = performance.now();
    let done;
    const finished = new Promise((resolve) => {
      done = resolve;
    });
    const check = () => {
      if (answers.length >= messages.length && echoes.length >= datagrams.length) done(true);
    };
    s.onBinary = (data) => {
      echoes.push(AeroUdp.toHex(new Uint8Array(data)));
      check();
    };
    if (l2) {
      l2.onBinary = (data) => {
        answers.push(AeroUdp.toHex(new Uint8Array(data)));
        check();
      };
      if (messages.length) l2.closed.then(() => done(false));
    }
    const errors = [];
    const gapMs = opts.gapMs || 0;
    try {
      for (let i = 0; i < Math.max(messages.length, datagrams.length); i++) {
        try {
          if (i < messages.length) l2.dc.send(messages[i]);
        } catch (err) {
          errors.push(`l2 send ${i}: ${err}`);
        }
        try {
          if (i < datagrams.length) s.dc.send(datagrams[i]);
        } catch (err) {
          errors.push(`udp send ${i}: ${err}`);
        }
        if (gapMs) await new Promise((resolve) => setTimeout(resolve, gapMs));
      }
      const sentMs = performance.now() - t0;
      check();
      const complete = await waitFor(finished, opts.timeoutMs || 5000, false);
      return {
        complete,
        answers,
        echoes,
        errors,
        sentMs,
        elapsedMs: performance.now() - t0,
        l2State: l2 ? l2.dc.readyState : null,
        udpState: s.dc.readyState,
      };
    } finally {
      s.onBinary = null;
      if (l2) l2.onBinary = null;
    }
  }

  window.AeroL2 = {
    L2_CHANNEL,
    // Create an `l2` channel on session `sessionId`'s PeerConnection; returns its id at once.
    open(sessionId, opts = {}) {
      const id = nextId++;
      channels.set(id, new L2Channel(AeroRtc.session(sessionId), opts));
      return id;
    },
    channel,
    // True once open; false if it closed first or did not open within timeoutMs.
    waitOpen(id, timeoutMs = 10000) {
      return waitFor(channel(id).opened, timeoutMs, false);
    },
    // True once closed; false if still not closed after timeoutMs.
    waitClosed(id, timeoutMs = 10000) {
      return waitFor(channel(id).closed, timeoutMs, false);
    },
    state(id) {
      return channel(id).state();
    },
    send(id, hex) {
      channel(id).dc.send(AeroUdp.fromHex(hex));
    },
    // Close the channel from the page (the PeerConnection and `udp` stay up).
    close(id) {
      channel(id).dc.close();
    },
    exchange,
  };
})();
