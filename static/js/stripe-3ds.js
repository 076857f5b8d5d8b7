// 3-D Secure with Stripe.js, on the project and payment pages (loaded only when the Stripe
// gateway is configured). The server gives the payer a button carrying the PaymentIntent's
// client secret; Stripe.js shows the bank's challenge (stripe.handleNextAction) and tells us
// how it ended. The payment's new state reaches the page by Stripe's webhook and the live
// updates (live.js swaps the fragment), so nothing is posted to our server from here.
// Clicks are delegated from the document because live.js replaces the buttons' fragments.

const clients = new Map();

function stripeFor(key) {
  if (!clients.has(key)) clients.set(key, window.Stripe(key));
  return clients.get(key);
}

function say(button, text) {
  const message = button.closest("[data-challenge]")?.querySelector("[data-stripe-3ds-message]");
  if (!message) return;
  message.textContent = text;
  message.hidden = !text;
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-stripe-3ds]");
  if (!button) return;
  event.preventDefault();
  if (!window.Stripe) {
    say(button, "The 3-D Secure check could not load (Stripe.js unavailable). Reload the page to try again.");
    return;
  }
  button.disabled = true;
  say(button, "");
  const stripe = stripeFor(button.dataset.stripeKey);
  const { paymentIntent, error } = await stripe.handleNextAction({
    clientSecret: button.dataset.clientSecret,
  });
  if (error) {
    // Failed or closed: Stripe reports the failure to us as well (the payment is rejected).
    say(button, error.message || "The 3-D Secure check did not succeed.");
    button.disabled = false;
    return;
  }
  const done = paymentIntent && paymentIntent.status !== "requires_action";
  say(button, done ? "" : "The check is not finished yet.");
  if (done) button.textContent = "Confirmed; waiting for the bank…";
  else button.disabled = false;
});
