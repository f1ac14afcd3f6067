// A test stand-in for OpenAI's <openai-chatkit> web component (the real one is CDN-only and cannot
// load offline). Like the real element it waits for setOptions(); it records what it was given in
// window.chatkitStandIn, asks api.getClientSecret() for a first secret at once, and asks again,
// with the secret it holds, whenever a test calls element.ask(current) (as ChatKit does to refresh).
const record = (window.chatkitStandIn = { options: [], secrets: [], errors: [] });

class ChatKitStandIn extends HTMLElement {
  setOptions(options) {
    const api = options.api || {};
    record.options.push({
      keys: Object.keys(api).sort(),
      url: api.url ?? null,
      domainKey: api.domainKey ?? null,
      getClientSecret: typeof api.getClientSecret,
    });
    this.api = api;
    if (typeof api.getClientSecret === "function") this.ask(undefined);
  }

  async ask(current) {
    const asked = Date.now() / 1000;
    try {
      const secret = await this.api.getClientSecret(current);
      record.secrets.push({ secret, asked, answered: Date.now() / 1000 });
      return secret;
    } catch (error) {
      record.errors.push({ name: error.name, code: error.code ?? null });
      return null;
    }
  }
}

customElements.define("openai-chatkit", ChatKitStandIn);
