/** In an ACL pattern, replaced by the principal the rule is applied to. */
export const PRINCIPAL_PLACEHOLDER = '{principal}';
