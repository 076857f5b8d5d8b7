// Stripe Elements for the payment-methods page (only when Stripe keys are configured):
// the card number goes from the Element straight to Stripe; we post only the pm_... id.
const form = document.getElementById("stripe-card-form");
const errors = document.getElementById("card-errors");

if (form && window.Stripe) {
  const stripe = window.Stripe(form.dataset.stripeKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  card.on("change", (event) => {
    errors.textContent = event.error ? event.error.message : "";
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const { paymentMethod, error } = await stripe.createPaymentMethod({ type: "card", card });
    if (error) {
      errors.textContent = error.message;
      button.disabled = false;
      return;
    }
    form.querySelector("#id_token").value = paymentMethod.id;
    form.submit();
  });
} else if (errors) {
  errors.textContent = "The card form could not load (Stripe.js unavailable).";
}
