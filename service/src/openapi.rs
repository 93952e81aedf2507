//! The OpenAPI document's frame (title, shared schemas, the bearer scheme).
//! Its paths come from the routes themselves (`documented_routes` in
//! `lib.rs`), so the router and the document cannot disagree.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Lattice API", description = "Federated research computing: identities, functions, endpoints, tasks, collections and transfers."),
    components(schemas(lattice_protocol::ErrorBody, lattice_protocol::ErrorCode, lattice_protocol::compute::StreamEvent,
        lattice_protocol::compute::SessionRequest, lattice_protocol::compute::SessionEvent,
        lattice_protocol::notify::EventBody)),
    modifiers(&BearerAuth),
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A Lattice access token; the scopes each route needs are listed on it",
                    ))
                    .build(),
            ),
        );
    }
}
