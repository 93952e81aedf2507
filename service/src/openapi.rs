//! The OpenAPI document, generated from the route annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Lattice API", description = "Federated research computing: identities, functions, endpoints, tasks, collections and transfers."),
    paths(
        routes::health::health,
        routes::auth::login_start,
        routes::auth::login_callback,
        routes::auth::token,
        routes::auth::revoke,
        routes::auth::whoami,
        routes::identities::show,
        routes::identities::link,
        routes::clients::create,
        routes::clients::list,
        routes::clients::delete,
        routes::clients::rotate_secret,
        routes::functions::register,
        routes::functions::list,
        routes::functions::show,
        routes::functions::delete,
        routes::endpoints::register,
        routes::endpoints::list,
        routes::endpoints::show,
        routes::tasks::submit_one,
        routes::tasks::submit_batch,
        routes::tasks::show,
        routes::tasks::status,
        routes::tasks::list,
        routes::tasks::cancel,
        routes::tasks::batch_status,
        routes::tasks::stream,
        routes::session::session,
        routes::collections::list,
        routes::collections::show,
        routes::collections::ls,
        routes::collections::stat,
        routes::collections::mkdir,
        routes::collections::rename,
        routes::collections::delete,
        routes::transfers::submit,
        routes::transfers::submit_delete,
        routes::transfers::list,
        routes::transfers::show,
        routes::transfers::cancel,
        routes::transfers::events,
        crate::relay::connect,
    ),
    components(schemas(lattice_protocol::ErrorBody, lattice_protocol::ErrorCode, lattice_protocol::compute::StreamEvent,
        lattice_protocol::compute::SessionRequest, lattice_protocol::compute::SessionEvent)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

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
