"use strict";
// A minimal browser client for the aero-relay wire protocol, written from PROTOCOL.md: the datagram
// frames of section 3 and the /udp WebSocket of section 4. The e2e tests drive it through
// Playwright's page.evaluate; everything that crosses into Python is plain JSON (bytes as hex).
(() => {
  const V2_MAGIC = 0xa2;
  const V2_VERSION = 0x02;
  const AF_INET = 0x04;
  const AF_INET6 = 0x06;
  const TYPE_DATAGRAM = 0x00;
  const V1_HEADER = 8;
  const V2_HEADER_IPV4 = 12;
  const V2_HEADER_IPV6 = 24;
  const DEFAULT_MAX_PAYLOAD = 1200;

  // --- bytes and addresses ---------------------------------------------------------------------

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function fromHex(hex) {
    if (hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) throw new Error(`bad hex: ${hex}`);
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    return out;
  }

  function parseIPv4(text) {
    const parts = text.split(".");
    if (parts.length !== 4) return null;
    const out = new Uint8Array(4);
    for (let i = 0; i < 4; i++) {
      if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i]) || Number(parts[i]) > 255) return null;
      out[i] = Number(parts[i]);
    }
    return out;
  }

  function parseIPv6(text) {
    let head = text;
    let tail = "";
    const dbl = text.indexOf("::");
    if (dbl >= 0) {
      if (text.indexOf("::", dbl + 1) >= 0) return null;
      head = text.slice(0, dbl);
      tail = text.slice(dbl + 2);
    }
    const groups = (s) => (s === "" ? [] : s.split(":"));
    const words = (list) => {
      const out = [];
      for (let i = 0; i < list.length; i++) {
        const g = list[i];
        if (i === list.length - 1 && g.includes(".")) {
          const v4 = parseIPv4(g); // a trailing dotted quad is two groups
          if (!v4) return null;
          out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
        } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) {
          out.push(parseInt(g, 16));
        } else {
          return null;
        }
      }
      return out;
    };
    const a = words(groups(head));
    const b = words(groups(tail));
    if (!a || !b) return null;
    const fill = 8 - a.length - b.length;
    if (dbl >= 0 ? fill < 1 : fill !== 0) return null;
    const all = [...a, ...new Array(dbl >= 0 ? fill : 0).fill(0), ...b];
    const out = new Uint8Array(16);
    all.forEach((w, i) => {
      out[2 * i] = w >> 8;
      out[2 * i + 1] = w & 0xff;
    });
    return out;
  }

  function formatIPv4(bytes) {
    return Array.from(bytes).join(".");
  }

  // RFC 5952: lowercase, no leading zeros, the first longest run (>= 2) of zero groups as "::".
  function formatIPv6(bytes) {
    const w = [];
    for (let i = 0; i < 16; i += 2) w.push((bytes[i] << 8) | bytes[i + 1]);
    let best = -1;
    let bestLen = 1;
    for (let i = 0; i < 8; ) {
      if (w[i] !== 0) {
        i++;
        continue;
      }
      let j = i;
      while (j < 8 && w[j] === 0) j++;
      if (j - i > bestLen) {
        best = i;
        bestLen = j - i;
      }
      i = j;
    }
    const hex = (list) => list.map((x) => x.toString(16)).join(":");
    if (best < 0) return hex(w);
    return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
  }

  function checkPort(port, what) {
    if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new Error(`bad ${what}: ${port}`);
  }

  function asBytes(payload) {
    if (payload instanceof Uint8Array) return payload;
    if (payload instanceof ArrayBuffer) return new Uint8Array(payload);
    if (typeof payload === "string") return new TextEncoder().encode(payload);
    throw new Error("payload must be a Uint8Array, an ArrayBuffer or a string");
  }

  // --- frames (PROTOCOL.md section 3) ------------------------------------------------------------

  function encodeV1(guestPort, remoteIp, remotePort, payload) {
    checkPort(guestPort, "guest port");
    checkPort(remotePort, "remote port");
    const ip = parseIPv4(remoteIp);
    if (!ip) throw new Error(`v1 needs an IPv4 address: ${remoteIp}`);
    const data = asBytes(payload);
    const out = new Uint8Array(V1_HEADER + data.length);
    const view = new DataView(out.buffer);
    view.setUint16(0, guestPort);
    out.set(ip, 2);
    view.setUint16(6, remotePort);
    out.set(data, V1_HEADER);
    return out;
  }

  function encodeV2(guestPort, remoteIp, remotePort, payload) {
    checkPort(guestPort, "guest port");
    checkPort(remotePort, "remote port");
    const v4 = parseIPv4(remoteIp);
    const ip = v4 || parseIPv6(remoteIp);
    if (!ip) throw new Error(`not an IP address: ${remoteIp}`);
    const data = asBytes(payload);
    const header = v4 ? V2_HEADER_IPV4 : V2_HEADER_IPV6;
    const out = new Uint8Array(header + data.length);
    const view = new DataView(out.buffer);
    out[0] = V2_MAGIC;
    out[1] = V2_VERSION;
    out[2] = v4 ? AF_INET : AF_INET6;
    out[3] = TYPE_DATAGRAM;
    view.setUint16(4, guestPort);
    out.set(ip, 6);
    view.setUint16(6 + ip.length, remotePort);
    out.set(data, header);
    return out;
  }

  function hex2(n) {
    return n.toString(16).padStart(2, "0");
  }

  // Returns {version, guestPort, remoteIp, remotePort, payload} or throws with the relay's error text.
  function decode(input, maxPayload = DEFAULT_MAX_PAYLOAD) {
    const b = asBytes(input);
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const tooShort = () => new Error("udpproto: datagram frame too short");
    const payloadOf = (offset) => {
      const n = b.length - offset;
      if (n > maxPayload) throw new Error(`udpproto: payload too large: ${n} > ${maxPayload}`);
      return b.slice(offset);
    };
    // A frame is v2 iff it is at least 2 bytes long and starts A2 02 (section 3.4).
    if (b.length >= 2 && b[0] === V2_MAGIC && b[1] === V2_VERSION) {
      if (b.length < V2_HEADER_IPV4) throw tooShort();
      if (b[3] !== TYPE_DATAGRAM) throw new Error(`udpproto: v2 unsupported message type: 0x${hex2(b[3])}`);
      let ipLen;
      if (b[2] === AF_INET) ipLen = 4;
      else if (b[2] === AF_INET6) ipLen = 16;
      else throw new Error(`udpproto: v2 unknown address family: 0x${hex2(b[2])}`);
      const header = 8 + ipLen;
      if (b.length < header) throw tooShort();
      const ip = b.slice(6, 6 + ipLen);
      return {
        version: 2,
        guestPort: view.getUint16(4),
        remoteIp: ipLen === 4 ? formatIPv4(ip) : formatIPv6(ip),
        remotePort: view.getUint16(6 + ipLen),
        payload: payloadOf(header),
      };
    }
    if (b.length < V1_HEADER) throw tooShort();
    return {
      version: 1,
      guestPort: view.getUint16(0),
      remoteIp: formatIPv4(b.slice(2, 6)),
      remotePort: view.getUint16(6),
      payload: payloadOf(V1_HEADER),
    };
  }

  // A decoded frame as JSON-friendly data (payload as hex), or {error} when it does not decode.
  function describe(bytes, maxPayload = DEFAULT_MAX_PAYLOAD) {
    try {
      const f = decode(bytes, maxPayload);
      return {
        version: f.version,
        guestPort: f.guestPort,
        remoteIp: f.remoteIp,
        remotePort: f.remotePort,
        payloadHex: toHex(f.payload),
      };
    } catch (err) {
      return { error: String(err.message) };
    }
  }

  // --- the /udp WebSocket (PROTOCOL.md section 4) --------------------------------------------------

  // Wraps one WebSocket: every event (text, binary, close) goes into one ordered queue that the tests
  // read with next(); `opened` settles true on open and false if the socket closes before opening.
  class RelaySocket {
    constructor(url) {
      this.url = url;
      this.queue = [];
      this.waiters = [];
      this.everOpened = false;
      this.errored = false;
      this.closeEvent = null;
      const ws = new WebSocket(url); // never a subprotocol: the relay selects none (section 4.1)
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      this.opened = new Promise((resolve) => {
        ws.addEventListener("open", () => {
          this.everOpened = true;
          resolve(true);
        });
        ws.addEventListener("close", () => resolve(this.everOpened));
      });
      ws.addEventListener("error", () => {
        this.errored = true;
      });
      ws.addEventListener("message", (ev) => {
        if (typeof ev.data === "string") {
          let json = null;
          try {
            json = JSON.parse(ev.data);
          } catch (_) {
            json = null;
          }
          this._push({ kind: "text", text: ev.data, json });
        } else {
          const bytes = new Uint8Array(ev.data);
          this._push({ kind: "binary", hex: toHex(bytes), frame: describe(bytes) });
        }
      });
      ws.addEventListener("close", (ev) => {
        this.closeEvent = { kind: "close", code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
        this._push(this.closeEvent);
      });
    }

    _push(event) {
      const waiter = this.waiters.shift();
      if (waiter) waiter(event);
      else this.queue.push(event);
    }

    next(timeoutMs = 5000) {
      if (this.queue.length) return Promise.resolve(this.queue.shift());
      return new Promise((resolve) => {
        const waiter = (event) => {
          clearTimeout(timer);
          resolve(event);
        };
        const timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve({ kind: "timeout" });
        }, timeoutMs);
        this.waiters.push(waiter);
      });
    }

    sendJson(obj) {
      this.ws.send(JSON.stringify(obj));
    }

    sendBytes(bytes) {
      this.ws.send(bytes);
    }

    close(code, reason) {
      this.ws.close(code, reason);
    }
  }

  const sockets = new Map();
  let nextId = 1;

  window.AeroUdp = {
    toHex,
    fromHex,
    parseIPv4,
    parseIPv6,
    formatIPv4,
    formatIPv6,
    encodeV1,
    encodeV2,
    decode,
    describe,
    RelaySocket,
    open(url) {
      const id = nextId++;
      sockets.set(id, new RelaySocket(url));
      return id;
    },
    socket(id) {
      const s = sockets.get(id);
      if (!s) throw new Error(`no socket ${id}`);
      return s;
    },
  };
})();
