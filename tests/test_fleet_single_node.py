"""The single-node end-to-end tests again, on a fleet's storage: one mitmdump whose store keeps its
registrations in a real PostgreSQL and its bodies in a real S3-compatible object store.

The tests are the very functions of their own modules (imported here, so pytest runs them again
in this module); only where the proxy keeps its store differs (`proxy_backing`). Those that read
SQLite's file themselves are not among them.
"""

import pytest

from tests.test_api import (  # noqa: F401  (collected by pytest from this module)
    test_a_bad_fetch_is_refused_naming_the_field,
    test_a_podcast_and_its_cover_are_one_registration,
    test_api_through_the_proxy_lists_ids,
    test_conflicts_wrong_media_types_and_unknown_ids,
    test_one_failing_request_fails_the_whole_registration_and_keeps_its_records,
    test_records_follow_match_all_rules,
    test_update_ui_and_new_credentials_for_a_paused_fetch,
)
from tests.test_events import (  # noqa: F401
    test_abort_event_and_a_stream_per_client,
    test_event_stream_through_the_proxy_and_replay_after_reconnect,
)
from tests.test_freshness_e2e import (  # noqa: F401  (revalidation, renewals, no-store, Vary)
    test_a_fresh_response_is_served_unless_the_client_insists,
    test_a_no_store_response_is_kept_only_for_the_requests_that_name_its_fetch,
    test_a_stale_response_is_revalidated_a_304_serves_it_and_refreshes_its_date,
    test_an_answer_that_is_not_the_stored_one_goes_to_the_client,
    test_conditional_requests_are_answered_304_by_the_store,
    test_vary_is_honoured_for_the_request_fields_it_names,
    test_with_the_origin_down_or_failing_the_stored_response_is_served,
)
from tests.test_header_e2e import (  # noqa: F401
    test_a_fetch_made_through_the_api_is_served_through_the_proxy,
    test_bad_header_gets_a_problem_and_nothing_reaches_the_origin,
    test_bad_status_fails_the_registration,
    test_client_leaves_and_the_store_finishes,
    test_curl_range_from_the_store_with_origin_down,
    test_download_total_exceeded,
    test_origin_never_sees_the_background_fetch_header,
    test_plain_traffic_passes_untouched_and_is_not_stored,
    test_respond_accepted_answers_202_with_the_registration,
    test_stored_body_keeps_the_origin_headers_and_answers_ranges_offline,
)
from tests.test_resume import (  # noqa: F401
    test_a_client_coming_back_with_range_is_served_from_the_stored_bytes,
    test_a_file_changed_between_cut_and_resume_starts_again_and_never_mixes,
    test_an_origin_that_ignores_range_is_read_again_from_byte_zero,
    test_cut_twice_mid_body_a_streaming_client_still_gets_every_byte,
    test_offline_at_the_start_waits_paused_and_completes_when_the_origin_is_back,
    test_without_validators_the_resume_starts_from_byte_zero,
)
from tests.test_transfers_e2e import (  # noqa: F401
    test_a_client_arriving_before_the_response_headers_waits_for_them,
    test_a_second_client_is_streamed_from_the_store_with_or_without_the_header,
    test_concurrency_runs_so_many_at_once_and_queues_the_rest_in_order,
    test_integrity_holds_the_body_back_until_it_is_verified,
    test_redirects_are_followed_and_the_final_status_decides,
    test_the_quota_counts_every_stored_body,
    test_a_body_that_fails_integrity_is_never_served,
)


@pytest.fixture
def proxy_backing(fleet_db, s3_server, fleet_bodies) -> dict:
    """Every proxy of these tests: a node of a fleet of one, on its own database and bucket prefix."""
    return {"db": fleet_db, "env": s3_server.credentials, "options": (f"bgfetch_bodies={fleet_bodies}",)}
