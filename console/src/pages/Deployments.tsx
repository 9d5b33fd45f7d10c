export function Deployments() {
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title">Deployments</h1>
    </section>
  );
}
