//! `GET /metrics`: Prometheus text format.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::errors::ApiError;
use crate::state::AppState;

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.metrics.render().map_err(|err| {
        ApiError::new(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {err}"),
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}
