// The /chat page: a session from the gateway, then the ChatKit web component mounted with it.
import {
  createSessionClient,
  HostedWorkflowNotConfigured,
  HostedWorkflowNotFound,
} from "/static/chatkit-gateway.js";

const COMPONENT_WAIT_MS = 15000;
const pane = document.getElementById("chat");
const chatkit = document.getElementById("chatkit");
const loading = document.getElementById("chat-loading");

function show(id, detail = "") {
  loading.hidden = true;
  const message = document.getElementById(id);
  const slot = message.querySelector(".detail");
  if (slot) slot.textContent = detail;
  message.hidden = false;
}

// The seed's §4: on these two errors, say so and leave hosted mode (nothing stays mounted).
function leaveHostedMode(error) {
  if (error instanceof HostedWorkflowNotConfigured) show("error-hosted_workflow_not_configured");
  else if (error instanceof HostedWorkflowNotFound) show("error-hosted_workflow_not_found");
  else return false;
  chatkit.remove();
  return true;
}

function whenDefined(name) {
  return Promise.race([
    customElements.whenDefined(name),
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`<${name}> was not defined: is the ChatKit script reachable?`)),
        COMPONENT_WAIT_MS)),
  ]);
}

async function start() {
  const client = createSessionClient({
    endpoint: pane.dataset.sessionUrl,
    workflow: pane.dataset.workflow || undefined,
    sessionHeaders: { "X-CSRF-Token": pane.dataset.csrfToken },
  });
  let api;
  try {
    api = await client.api({ domainKey: pane.dataset.domainKey || "" });
    await whenDefined("openai-chatkit");
  } catch (error) {
    client.close();
    if (!leaveHostedMode(error)) show("error-other", error.message);
    return;
  }
  if (api.getClientSecret) {
    const getClientSecret = api.getClientSecret;
    api = {
      getClientSecret: async (current) => {
        try {
          return await getClientSecret(current);
        } catch (error) {
          if (leaveHostedMode(error)) client.close();
          throw error;
        }
      },
    };
  }
  chatkit.setOptions({ api });
  loading.hidden = true;
  chatkit.hidden = false;
}

start();
