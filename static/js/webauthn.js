/* Security keys (WebAuthn) for the portal: registering a key and using it at login.
 *
 * The server sends options as JSON (binary fields in base64url) and checks the answer; this
 * file only converts between JSON and the browser's ArrayBuffers and calls
 * navigator.credentials. Texts come from data-msg-* attributes so they are translated. */
(function () {
  "use strict";

  function toBuffer(value) {
    var text = value.replace(/-/g, "+").replace(/_/g, "/");
    while (text.length % 4) {
      text += "=";
    }
    var binary = window.atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) {
      binary += String.fromCharCode(bytes[i]);
    }
    return window.btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function csrfToken(root) {
    var input = root.querySelector("input[name=csrfmiddlewaretoken]") ||
      document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function postJSON(url, body, token) {
    return window.fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": token },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().then(function (data) {
        return { ok: response.ok, data: data };
      });
    });
  }

  function credentialToJSON(credential) {
    var response = credential.response;
    var out = {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: { clientDataJSON: toBase64url(response.clientDataJSON) }
    };
    if (credential.authenticatorAttachment) {
      out.authenticatorAttachment = credential.authenticatorAttachment;
    }
    if (response.attestationObject) {
      out.response.attestationObject = toBase64url(response.attestationObject);
      out.response.transports = response.getTransports ? response.getTransports() : [];
    }
    if (response.authenticatorData) {
      out.response.authenticatorData = toBase64url(response.authenticatorData);
      out.response.signature = toBase64url(response.signature);
      if (response.userHandle) {
        out.response.userHandle = toBase64url(response.userHandle);
      }
    }
    return out;
  }

  function setStatus(block, text) {
    var status = block.querySelector("[data-webauthn-status]");
    if (status) {
      status.textContent = text || "";
    }
  }

  function fail(block, data) {
    if (data && data.redirect) {
      window.location.assign(data.redirect);
      return;
    }
    setStatus(block, (data && data.message) || block.getAttribute("data-msg-failed"));
  }

  function register(block, event) {
    event.preventDefault();
    var nameInput = block.querySelector("input[name=name]");
    var name = nameInput ? nameInput.value.trim() : "";
    if (!name) {
      setStatus(block, block.getAttribute("data-msg-name"));
      return;
    }
    var token = csrfToken(block);
    setStatus(block, block.getAttribute("data-msg-working"));
    postJSON(block.getAttribute("data-options-url"), {}, token).then(function (result) {
      if (!result.ok) {
        return fail(block, result.data);
      }
      var options = result.data;
      options.challenge = toBuffer(options.challenge);
      options.user.id = toBuffer(options.user.id);
      (options.excludeCredentials || []).forEach(function (item) {
        item.id = toBuffer(item.id);
      });
      return navigator.credentials.create({ publicKey: options }).then(function (credential) {
        return postJSON(block.getAttribute("data-register-url"),
          { name: name, credential: credentialToJSON(credential) }, token);
      }).then(function (answer) {
        if (answer.ok && answer.data.redirect) {
          window.location.assign(answer.data.redirect);
        } else {
          fail(block, answer.data);
        }
      });
    }).catch(function () {
      fail(block, null);
    });
  }

  function authenticate(block, event) {
    event.preventDefault();
    var token = csrfToken(block);
    setStatus(block, block.getAttribute("data-msg-working"));
    postJSON(block.getAttribute("data-options-url"), {}, token).then(function (result) {
      if (!result.ok) {
        return fail(block, result.data);
      }
      var options = result.data;
      options.challenge = toBuffer(options.challenge);
      (options.allowCredentials || []).forEach(function (item) {
        item.id = toBuffer(item.id);
      });
      return navigator.credentials.get({ publicKey: options }).then(function (credential) {
        return postJSON(block.getAttribute("data-verify-url"),
          { credential: credentialToJSON(credential), next: block.getAttribute("data-next") }, token);
      }).then(function (answer) {
        if (answer.ok && answer.data.redirect) {
          window.location.assign(answer.data.redirect);
        } else {
          fail(block, answer.data);
        }
      });
    }).catch(function () {
      fail(block, null);
    });
  }

  function setUp() {
    var blocks = document.querySelectorAll("[data-webauthn]");
    Array.prototype.forEach.call(blocks, function (block) {
      var start = block.querySelector("[data-webauthn-start]");
      if (!window.PublicKeyCredential || !navigator.credentials) {
        setStatus(block, block.getAttribute("data-msg-unsupported"));
        if (start) {
          start.disabled = true;
        }
        return;
      }
      var kind = block.getAttribute("data-webauthn");
      var form = block.tagName === "FORM" ? block : block.querySelector("form");
      var handler = kind === "register" ? register : authenticate;
      if (form) {
        form.addEventListener("submit", function (event) {
          handler(block, event);
        });
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
