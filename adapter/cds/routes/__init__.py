"""The service's routes, one APIRouter per concern. Authentication is not declared here: `create_app`
includes every CDS Hooks router with the `require_caller` dependency."""
